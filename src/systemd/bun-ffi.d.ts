// The slice of bun:ffi that sd-notify-bun.ts uses; Bun's own types would clash with @types/node.
declare module "bun:ffi" {
  export const FFIType: { readonly i32: number; readonly u32: number; readonly u64: number; readonly i64: number; readonly ptr: number };
  export function dlopen<Fns extends Record<string, { args: number[]; returns: number }>>(
    path: string,
    symbols: Fns,
  ): { symbols: { [K in keyof Fns]: (...args: unknown[]) => number | bigint }; close(): void };
}
