import { readFile } from 'node:fs/promises';
import { type Argv } from 'yargs';
import { type BindingJSON, parseBinding, parsePortText, parseProtocol } from '../../bindings/binding.js';
import { parseBindingsText } from '../../bindings/file.js';
import { DispatcherError } from '../../errors.js';
import { defineCommand, type GlobalArgs } from '../command.js';
import { type Column, describe, formatTable, print, printJSON, printWarnings } from '../format.js';
import { atRevision, storeArgs, withTarget, writeArgs, writeQuery } from '../target.js';

const BINDING_COLUMNS: Column<BindingJSON>[] = [
  { title: 'LABEL', cell: (b) => b.label },
  { title: 'PROTOCOL', cell: (b) => b.protocol },
  { title: 'PREFIX', cell: (b) => b.prefix },
  { title: 'PORT', cell: (b) => String(b.port), right: true },
];

const bindingArgs = (y: Argv<GlobalArgs>) =>
  writeArgs(y)
    .positional('label', { type: 'string', describe: 'the label: 1-64 of A-Z a-z 0-9 . _ -' })
    .positional('protocol', { type: 'string', describe: 'tcp or udp' })
    .positional('prefix', { type: 'string', describe: 'IPv4 or IPv6 CIDR; a bare address is /32 or /128' })
    .positional('port', { type: 'string', default: '0', describe: '1-65535, or 0 for every port' });

/** Validated here for a quick, local error; the daemon validates again. */
function bindingFromArgs(argv: { label?: string; protocol?: string; prefix?: string; port: string }): BindingJSON {
  return parseBinding({ label: argv.label, protocol: argv.protocol, prefix: argv.prefix, port: parsePortText(argv.port) }).toJSON();
}

const add = defineCommand({
  command: 'add <label> <protocol> <prefix> [port]',
  describe: 'bind (protocol, prefix, port) to a label; replaces the label of an equal binding',
  builder: bindingArgs,
  handler: async (argv) => {
    const w = writeQuery(argv);
    const { binding, replaced, warnings, revision } = await withTarget(argv, (t) => t.addBinding(bindingFromArgs(argv), w));
    print(
      `added ${describe(binding)}${replaced && replaced.label !== binding.label ? ` (was -> ${replaced.label})` : ''}${atRevision(revision)}`,
    );
    printWarnings(warnings);
  },
});

const rm = defineCommand({
  command: 'rm <label> <protocol> <prefix> [port]',
  describe: 'remove a binding (the label must match)',
  builder: bindingArgs,
  handler: async (argv) => {
    const w = writeQuery(argv);
    const { removed, revision } = await withTarget(argv, (t) => t.removeBinding(bindingFromArgs(argv), w));
    print(`removed ${describe(removed)}${atRevision(revision)}`);
  },
});

const list = defineCommand({
  command: 'list',
  describe: 'list bindings in precedence-friendly order; filters combine',
  builder: (y) =>
    storeArgs(y)
      .option('host', { type: 'string', describe: "with --store: this host's own set (default: the global set)" })
      .option('label', { type: 'string' })
      .option('protocol', { type: 'string' })
      .option('prefix', { type: 'string', describe: 'only bindings whose prefix lies within this one' })
      .option('port', { type: 'string' })
      .option('json', { type: 'boolean', default: false }),
  handler: async (argv) => {
    const filter = {
      label: argv.label,
      protocol: argv.protocol === undefined ? undefined : parseProtocol(argv.protocol),
      prefix: argv.prefix,
      port: argv.port === undefined ? undefined : parsePortText(argv.port),
    };
    const { host } = writeQuery(argv);
    const res = await withTarget(argv, (t) => t.listBindings(filter, host));
    if (argv.json) printJSON(res);
    else print(formatTable(BINDING_COLUMNS, res.bindings, 'no bindings'));
  },
});

const load = defineCommand({
  command: 'load <file>',
  describe: "replace all bindings with a file's, atomically",
  builder: (y) =>
    writeArgs(y).positional('file', { type: 'string', demandOption: true }).option('dry-run', { type: 'boolean', default: false }),
  handler: async (argv) => {
    const w = writeQuery(argv);
    const text = await readFile(argv.file, 'utf8').catch((err: Error) => {
      throw new DispatcherError('ERR_BINDINGS_FILE', `cannot read ${argv.file}: ${err.message}`);
    });
    parseBindingsText(text, argv.file);
    const dryRun = argv['dry-run'];
    const { added, removed, warnings, revision } = await withTarget(argv, (t) => t.replaceBindings(text, { ...w, dryRun }));
    const out = [...removed.map((b) => `- ${describe(b)}`), ...added.map((b) => `+ ${describe(b)}`)];
    out.push(
      `${dryRun ? 'would add' : 'added'} ${added.length}, ${dryRun ? 'would remove' : 'removed'} ${removed.length}${atRevision(revision)}`,
    );
    print(out.join('\n'));
    printWarnings(warnings);
  },
});

const exportCommand = defineCommand({
  command: 'export',
  describe: 'print every binding as a bindings file (export | load is a no-op)',
  builder: (y) => storeArgs(y).option('host', { type: 'string', describe: "with --store: this host's own set (default: the global set)" }),
  handler: async (argv) => {
    const { host } = writeQuery(argv);
    const { bindings } = await withTarget(argv, (t) => t.listBindings({}, host));
    printJSON({ bindings });
  },
});

export const bindCommand = defineCommand({
  command: 'bind',
  describe: 'change and show the bindings',
  builder: (y) =>
    y
      .command(add)
      .command(rm)
      .command(list)
      .command(load)
      .command(exportCommand)
      .demandCommand(1, 'name a bind command: add, rm, list, load or export'),
  handler: () => undefined,
});
