/**
 * Every error the dispatcher reports on purpose carries a stable `code`, so the control API, the CLI and
 * tests can tell them apart without matching on text (as undici and Node do).
 */
export type ErrorCode =
  | 'ERR_PROTOCOL'
  | 'ERR_PREFIX'
  | 'ERR_PORT'
  | 'ERR_LABEL'
  | 'ERR_ADDRESS'
  | 'ERR_BINDINGS_FILE'
  | 'ERR_NO_BINDING'
  | 'ERR_LABEL_MISMATCH'
  | 'ERR_NO_MATCH'
  | 'ERR_REQUEST'
  | 'ERR_NOT_FOUND'
  | 'ERR_STATE'
  | 'ERR_ALREADY_RUNNING'
  | 'ERR_DAEMON_UNREACHABLE'
  | 'ERR_PROTOCOL_MESSAGE'
  | 'ERR_VERSION'
  | 'ERR_NOT_ALLOWED'
  | 'ERR_REPLY_SOCKET'
  | 'ERR_LISTEN'
  | 'ERR_CONFIG'
  | 'ERR_TPROXY'
  | 'ERR_UPSTREAM'
  | 'ERR_NO_UPSTREAM'
  | 'ERR_USAGE'
  | 'ERR_BUSY'
  | 'ERR_ADOPT'
  | 'ERR_MODE'
  | 'ERR_CONFLICT'
  | 'ERR_STORE'
  | 'ERR_NO_STORE'
  | 'ERR_TIMEOUT';

export class DispatcherError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string) {
    super(message);
    this.name = 'DispatcherError';
    this.code = code;
  }
}

/** What a `catch` caught, as an Error (anything thrown that is not one is wrapped). */
export function asError(caught: unknown): Error {
  return caught instanceof Error ? caught : new Error(String(caught));
}
