// Lint rules: typescript-eslint's type-checked recommendations over src, test, bench and examples (the
// same tsconfig as `npm run typecheck`); formatting is Prettier's alone.
import js from '@eslint/js';
import globals from 'globals';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/', 'native/build/', 'bench/results/', 'node_modules/'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      globals: globals.node,
      parserOptions: {
        // This file is outside tsconfig.json's include (type-checking the config would only add noise);
        // the project service's default project types it instead.
        projectService: { allowDefaultProject: ['eslint.config.js'] },
        tsconfigRootDir: import.meta.dirname,
      },
    },
    rules: {
      // Unused arguments named with a leading underscore are part of a callback's signature.
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    },
  },
  {
    files: ['test/**/*.test.ts'],
    rules: {
      // tap awaits every subtest it creates (t.test returns a promise only for those who want it), so a
      // top-level or unawaited t.test(...) is not a floating promise; any other promise still is.
      '@typescript-eslint/no-floating-promises': [
        'error',
        { allowForKnownSafeCalls: [{ from: 'package', package: '@tapjs/test', name: ['test'] }] },
      ],
      // tap's callbacks are async by convention: a test that returns a promise ends when it settles,
      // whether or not its body awaits anything.
      '@typescript-eslint/require-await': 'off',
    },
  },
);
