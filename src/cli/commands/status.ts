import { viewCommand } from '../command.js';
import { formatStatus } from '../format.js';

export const statusCommand = viewCommand('status', 'the daemon at a glance', (client) => client.status(), formatStatus);
