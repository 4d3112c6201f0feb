import tseslint from "typescript-eslint";
import { importX } from "eslint-plugin-import-x";
import { createTypeScriptImportResolver } from "eslint-import-resolver-typescript";

export default tseslint.config(
  { ignores: ["node_modules/**", "dist/**", "src/gen/**"] },
  ...tseslint.configs.recommended,
  importX.flatConfigs.typescript,
  {
    files: ["**/*.ts"],
    plugins: { "import-x": importX },
    // Resolves our ".js" specifiers to the ".ts" sources, so no-cycle sees the real graph.
    settings: { "import-x/resolver-next": [createTypeScriptImportResolver({ project: "./tsconfig.json" })] },
    rules: {
      "import-x/no-cycle": ["error", { ignoreExternal: true }],
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
    },
  },
  {
    // Machines are pure: no I/O, no process, nothing from src/.
    files: ["machines/**/*.ts"],
    rules: {
      "no-restricted-imports": ["error", {
        patterns: [
          { group: ["node:*"], message: "machines/ is pure: bind effects with .provide() in src/runs/." },
          { group: ["../src/*", "../../src/*", "**/src/**"], message: "machines/ imports only xstate." },
        ],
        paths: ["fs", "path", "child_process", "os", "net", "http", "dockerode", "better-sqlite3"],
      }],
      "no-restricted-globals": ["error", "process", "require"],
    },
  },
  {
    // The API talks to the domain (src/runs, src/auth), which owns the store: one
    // ownership check per kind of thing, typed errors instead of SQLite's words.
    files: ["src/api/**/*.ts"],
    rules: {
      "no-restricted-imports": ["error", {
        patterns: [{ group: ["**/store/*"], message: "src/api goes through the domain layer (src/runs, src/auth), not src/store." }],
      }],
    },
  },
  {
    // Nothing below the API imports it, the composition root or the entry point.
    files: ["src/runs/**/*.ts", "src/store/**/*.ts", "src/sandbox/**/*.ts", "src/agent/**/*.ts"],
    rules: {
      "no-restricted-imports": ["error", {
        patterns: [{ group: ["**/api/*", "**/app.js", "**/main.js", "**/cli/*"], message: "Only app.ts and main.ts compose layers." }],
      }],
    },
  },
);
