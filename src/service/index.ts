// The package entry a service imports (`l4-dispatcher/service`): the worker end of the services protocol.
export {
  attach,
  serve,
  Service,
  type ConnectionHandler,
  type ConnectionInfo,
  type DatagramHandler,
  type Handlers,
  type Reply,
  type ServiceEvents,
  type ServiceOptions,
} from '../services/client.js';
export { type SteeredSocket } from '../services/steered.js';
