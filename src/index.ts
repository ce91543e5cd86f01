// The library the CLI is a thin layer over.
export {
  Binding,
  type BindingJSON,
  type Protocol,
  parseBinding,
  parsePrefix,
  parsePort,
  parsePortText,
  parseProtocol,
  parseLabel,
} from './bindings/binding.js';
export { parseAddress, formatAddress, type Address, type Family } from './bindings/address.js';
export { parseBindingsText, parseBindingsDocument, formatBindingsFile, type BindingsFile } from './bindings/file.js';
export { compareForList, bindingFilter, type Filter } from './bindings/order.js';
export { Table, type Diff } from './table/table.js';
export { PrefixIndex } from './table/prefix-index.js';
export { ControlClient } from './control/client.js';
export type * from './control/protocol.js';
export { Daemon, type DaemonOptions } from './daemon/daemon.js';
export { DispatcherError, type ErrorCode } from './errors.js';
