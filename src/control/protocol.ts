/**
 * What the control API's server and client agree on (documented in docs/control-api.md). Version 1 lives
 * under /v1; an incompatible change gets a new prefix.
 */
export const API_PREFIX = '/v1';
export const DEFAULT_CONTROL_PATH = '/run/dispatcher/control.sock';
export const DEFAULT_STATE_DIR = '/var/lib/dispatcher';

export interface ErrorBody {
  error: { code: string; message: string };
}
