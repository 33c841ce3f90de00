import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["node_modules/**", ".build/**", ".wrangler/**", ".sluice/**", ".scratch/**", "worker-configuration.d.ts", "vt-tmp.config.ts"] },
  ...tseslint.configs.recommended,
  {
    rules: {
      "@typescript-eslint/no-explicit-any": "error",
      "@typescript-eslint/consistent-type-imports": ["error", { fixStyle: "inline-type-imports" }],
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_" }],
    },
  },
);
