// Shared lint rules for every package and app (flat config). Type-aware rules are left to `tsc`.
import js from "@eslint/js";
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["**/dist/**", "**/node_modules/**", "**/drizzle/**", "**/coverage/**"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      "@typescript-eslint/consistent-type-imports": "error",
      "no-restricted-syntax": [
        "error",
        { selector: "ExportDefaultDeclaration", message: "No default exports (STYLE.md)." },
      ],
    },
  },
  {
    files: ["**/*.config.ts", "**/*.config.js", "eslint.config.js"],
    rules: { "no-restricted-syntax": "off" },
  },
);
