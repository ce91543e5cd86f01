import { type BuiltPlugins, type Test } from '@tapjs/test';

/** The `t` a tap test callback receives, for helpers that take it. */
export type TapTest = Test & BuiltPlugins;
