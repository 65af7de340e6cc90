// A minimal reader of the WebAssembly binary format, the JavaScript mirror of
// sharedwasm/_binary.py: what the runtime needs to know about a kernel that
// WebAssembly.Module's reflection does not tell (it gives names and kinds
// only). That is the initial values of the exported i32 globals (where a C
// kernel's static data ends, its thread-local block's size), where the active
// data segments end, the signatures of the exported functions (the entries'
// parameters), the limits of the imported memory, the function names of the
// name section and the payloads of custom sections (the signature record).
//
// It reads modules that have already compiled, so it assumes well-formed
// input; an encoding it does not know throws a RangeError.

const VALTYPES = { 0x7f: "i32", 0x7e: "i64", 0x7d: "f32", 0x7c: "f64", 0x7b: "v128" };
const PACKED = { 0x78: "i8", 0x77: "i16" };
const KINDS = ["function", "table", "memory", "global", "tag"];
/** Export kinds as the Python reader names them, for the same messages. */
const EXPORT_KINDS = ["func", "table", "memory", "global", "tag"];
const UTF8 = new TextDecoder();

class Reader {
  constructor(bytes) {
    this.bytes = bytes;
    this.pos = 0;
  }

  byte() {
    if (this.pos >= this.bytes.length) throw new RangeError("unexpected end of the module");
    return this.bytes[this.pos++];
  }

  uleb() {
    let result = 0;
    let scale = 1;
    for (;;) {
      const b = this.byte();
      result += (b & 0x7f) * scale;
      scale *= 128;
      if (!(b & 0x80)) return result;
    }
  }

  sleb() {
    // The same groups of 7 bits as an unsigned number; bit 6 of the last
    // byte is the sign.
    const start = this.pos;
    const value = this.uleb();
    const scale = 128 ** (this.pos - start);
    return this.bytes[this.pos - 1] & 0x40 ? value - scale : value;
  }

  name() {
    const n = this.uleb();
    const raw = this.bytes.subarray(this.pos, this.pos + n);
    this.pos += n;
    return UTF8.decode(raw);
  }

  valtype() {
    const b = this.byte();
    if (b in VALTYPES) return VALTYPES[b];
    if (b in PACKED) return PACKED[b];
    // (ref null? heaptype): the s33 heap type takes the bytes of a u32.
    if (b === 0x63 || b === 0x64) this.uleb();
    return "ref";
  }

  /** Read a constant expression; return its value if it is one i32.const, else null. */
  constExpr() {
    const op = this.byte();
    let value = null;
    if (op === 0x41) value = this.sleb();
    else if (op === 0x42) this.sleb();
    else if (op === 0x43 || op === 0x44) this.pos += op === 0x43 ? 4 : 8;
    else if (op === 0x23 || op === 0xd2) this.uleb();
    else if (op === 0xd0) this.sleb();
    else if (op === 0xfd) {
      this.uleb();
      this.pos += 16;
    }
    if (this.byte() !== 0x0b) throw new LongExpression();
    return value;
  }

  /** Read memory or table limits: `{minimum, maximum (null if none), shared}`. */
  limits() {
    const flags = this.byte();
    const minimum = this.uleb();
    const maximum = flags & 1 ? this.uleb() : null;
    return { minimum, maximum, shared: Boolean(flags & 2) };
  }

  comptype() {
    const form = this.byte();
    if (form === 0x60) {
      const params = Array.from({ length: this.uleb() }, () => this.valtype());
      const results = Array.from({ length: this.uleb() }, () => this.valtype());
      return { params, results };
    }
    if (form === 0x5f) {
      for (let i = this.uleb(); i > 0; i--) {
        this.valtype();
        this.byte();
      }
    } else if (form === 0x5e) {
      this.valtype();
      this.byte();
    }
    return null;
  }

  subtype() {
    if (this.bytes[this.pos] === 0x50 || this.bytes[this.pos] === 0x4f) {
      this.byte();
      for (let i = this.uleb(); i > 0; i--) this.uleb();
    }
    return this.comptype();
  }
}

/** A constant expression of more than one instruction (extended constants): not followed. */
class LongExpression extends Error {}

/**
 * Read what the runtime needs from a compiled module's bytes.
 *
 * @param {Uint8Array} bytes
 * @returns {{globals: Map<string, {value: number | null, mutable: boolean}>,
 *   activeDataEnd: number, namedGlobals: Map<string, number>,
 *   exportedGlobalIndices: Set<number>,
 *   exportedFunctions: Map<string, {params: string[], results: string[]} | null>,
 *   exports: Map<string, string>, functionNames: string[],
 *   customSections: Map<string, Uint8Array>,
 *   memoryImport: {minimum: number, maximum: number | null, shared: boolean} | null}}
 *   `globals` holds the exported i32 globals the module defines, with their
 *   initial value (null if it is not a plain constant); `namedGlobals` the
 *   global indices of the name section; a signature is null for a function
 *   of a non-function type. `exports` gives every export's kind ("func",
 *   "table", "memory", "global" or "tag") in the export section's order,
 *   which is the order of the entries; `customSections` the payload of the
 *   last custom section of each name; `memoryImport` the limits of
 *   env.memory, if the module imports it.
 * @throws {RangeError} the bytes end early or use an encoding this reader does not know
 */
export function readModule(bytes) {
  const r = new Reader(bytes);
  const types = [];
  const funcTypes = [];
  const defined = [];
  const exportedGlobals = new Map();
  const exportedFuncs = new Map();
  const namedGlobals = new Map();
  const exports = new Map();
  const functionNames = [];
  const customSections = new Map();
  let memoryImport = null;
  let importedGlobals = 0;
  let activeDataEnd = 0;
  r.pos = 8;
  while (r.pos < bytes.length) {
    const section = r.byte();
    const end = r.uleb() + r.pos;
    const custom = section === 0 ? r.name() : null;
    if (custom !== null) customSections.set(custom, bytes.subarray(r.pos, end));
    if (custom === "name") {
      while (r.pos < end) {
        const sub = r.byte();
        const subEnd = r.uleb() + r.pos;
        if (sub === 7) {
          for (let i = r.uleb(); i > 0; i--) {
            const index = r.uleb();
            namedGlobals.set(r.name(), index);
          }
        } else if (sub === 1) {
          for (let i = r.uleb(); i > 0; i--) {
            r.uleb();
            functionNames.push(r.name());
          }
        }
        r.pos = subEnd;
      }
    } else if (section === 1) {
      for (let i = r.uleb(); i > 0; i--) {
        if (bytes[r.pos] === 0x4e) {
          r.byte();
          for (let j = r.uleb(); j > 0; j--) types.push(r.subtype());
        } else {
          types.push(r.subtype());
        }
      }
    } else if (section === 2) {
      for (let i = r.uleb(); i > 0; i--) {
        const from = r.name();
        const field = r.name();
        const kind = KINDS[r.byte()];
        if (kind === "function") {
          funcTypes.push(r.uleb());
        } else if (kind === "table") {
          r.valtype();
          r.limits();
        } else if (kind === "memory") {
          const limits = r.limits();
          if (from === "env" && field === "memory") memoryImport = limits;
        } else if (kind === "global") {
          r.valtype();
          r.byte();
          importedGlobals++;
        } else {
          r.byte();
          r.uleb();
        }
      }
    } else if (section === 3) {
      for (let i = r.uleb(); i > 0; i--) funcTypes.push(r.uleb());
    } else if (section === 6) {
      try {
        for (let i = r.uleb(); i > 0; i--) {
          const content = r.valtype();
          const mutable = Boolean(r.byte());
          const value = r.constExpr();
          defined.push(content === "i32" ? { value, mutable } : null);
        }
      } catch (err) {
        // The rest cannot be followed; none of the globals read here is past it.
        if (!(err instanceof LongExpression)) throw err;
      }
    } else if (section === 7) {
      for (let i = r.uleb(); i > 0; i--) {
        const name = r.name();
        const kind = r.byte();
        const index = r.uleb();
        exports.set(name, EXPORT_KINDS[kind] ?? "?");
        if (kind === 0) exportedFuncs.set(name, index);
        if (kind === 3) exportedGlobals.set(name, index);
      }
    } else if (section === 11) {
      try {
        for (let i = r.uleb(); i > 0; i--) {
          const flags = r.uleb();
          let offset = null;
          if (flags === 0 || flags === 2) {
            if (flags === 2) r.uleb();
            offset = r.constExpr();
          }
          const size = r.uleb();
          r.pos += size;
          if (offset !== null) activeDataEnd = Math.max(activeDataEnd, (offset >>> 0) + size);
        }
      } catch (err) {
        // An offset of several instructions (position-independent code has
        // them) is not followed, nor are the segments past it.
        if (!(err instanceof LongExpression)) throw err;
      }
    }
    r.pos = end;
  }
  const globals = new Map();
  for (const [name, index] of exportedGlobals) {
    const entry = defined[index - importedGlobals];
    if (entry) globals.set(name, entry);
  }
  const exportedFunctions = new Map();
  for (const [name, index] of exportedFuncs) {
    exportedFunctions.set(name, types[funcTypes[index]] ?? null);
  }
  return {
    globals,
    activeDataEnd,
    namedGlobals,
    exportedGlobalIndices: new Set(exportedGlobals.values()),
    exportedFunctions,
    exports,
    functionNames,
    customSections,
    memoryImport,
  };
}
