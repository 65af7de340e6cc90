// Entries: the functions of a kernel module that a pool can run, and their
// parameters; the mirror of sharedwasm/_entries.py, with the same rules and
// the same messages, so that a module means the same on both sides.
//
// An entry is
//
//   * an exported function named `compute_partition`, the original ABI,
//     taking (start: i32, end: i32) only; its entry name is compute_partition;
//   * an exported function named `entry:NAME`, taking (start: i32, end: i32,
//     ...) with at most ARGUMENT_SLOTS further i32, i64, f32 or f64
//     parameters and returning nothing; its entry name is NAME.
//
// No other export is an entry; an `entry:` export of another shape is
// refused. An entry's index is its position among the entries in the export
// section's order: the run publishes it in Control.ENTRY, and the Python
// runner dispatches on the same index.
//
// What the wasm types do not say (that an i32 is a `const float *`) the
// module may say in a `sharedwasm.entries` custom section, written by
// `sharedwasm build`: JSON {"version": 1, "entries": {NAME: [{"name",
// "type", "canonical"}, ...]}} listing the parameters after (start, end).
// With it each argument is checked against its C type and arguments may be
// passed by name; without it, against the wasm types alone.

import { KernelError } from "./errors.mjs";
import { ARGUMENT_SLOTS } from "./layout.mjs";

export const LEGACY_ENTRY = "compute_partition";
export const ENTRY_PREFIX = "entry:";
export const SIGNATURE_SECTION = "sharedwasm.entries";
export const SIGNATURE_VERSION = 1;
export const WASM_TYPES = Object.freeze(["i32", "i64", "f32", "f64"]);

/**
 * C scalar types on wasm32 (char is signed, long is 32 bits): the numpy
 * dtype's name, as the Python package checks it, and the wasm type.
 */
const C_SCALARS = {
  float: ["float32", "f32"],
  double: ["float64", "f64"],
  _Bool: ["bool", "i32"],
  bool: ["bool", "i32"],
  char: ["int8", "i32"],
  "signed char": ["int8", "i32"],
  "unsigned char": ["uint8", "i32"],
  short: ["int16", "i32"],
  "unsigned short": ["uint16", "i32"],
  int: ["int32", "i32"],
  "unsigned int": ["uint32", "i32"],
  long: ["int32", "i32"],
  "unsigned long": ["uint32", "i32"],
  "long long": ["int64", "i64"],
  "unsigned long long": ["uint64", "i64"],
};

/**
 * The typed array a pointer to each dtype takes. JavaScript has no array
 * of bools: a `bool *` takes a Uint8Array, whose bytes are what C reads.
 */
export const ARRAY_OF = Object.freeze({
  float32: Float32Array,
  float64: Float64Array,
  bool: Uint8Array,
  int8: Int8Array,
  uint8: Uint8Array,
  int16: Int16Array,
  uint16: Uint16Array,
  int32: Int32Array,
  uint32: Uint32Array,
  int64: BigInt64Array,
  uint64: BigUint64Array,
});

const QUALIFIERS = /\b(const|volatile|restrict|__restrict|__restrict__)\b/g;
const SPELLINGS = {
  signed: "int",
  unsigned: "unsigned int",
  "signed int": "int",
  "short int": "short",
  "signed short": "short",
  "unsigned short int": "unsigned short",
  "long int": "long",
  "signed long": "long",
  "unsigned long int": "unsigned long",
  "long long int": "long long",
  "signed long long": "long long",
  "unsigned long long int": "unsigned long long",
};

const hasOwn = (object, key) => Object.prototype.hasOwnProperty.call(object, key);

/** A C type without qualifiers, in one canonical spelling. */
function baseType(spelling) {
  const bare = spelling.replace(QUALIFIERS, " ").split(/\s+/).filter(Boolean).join(" ");
  return hasOwn(SPELLINGS, bare) ? SPELLINGS[bare] : bare;
}

/** Python's repr of a str, for messages that must read as the Python package's. */
const pyRepr = (text) => (String(text).includes("'") ? JSON.stringify(text) : `'${text}'`);

/** One parameter of an entry after (start, end). */
export class Param {
  /**
   * @param {string} name the author's name for it, or `argN` when the module does not say
   * @param {string} wasmType i32, i64, f32 or f64
   * @param {{ctype?: string | null, pointer?: boolean, dtype?: string | null,
   *   isConst?: boolean}} [details] the C type as written (null when the module
   *   does not say); whether it is a pointer (an array argument, passed as its
   *   byte address); the dtype of the pointee or of the scalar (null when
   *   unchecked: `void *`, a struct, an untyped i32); whether it points to const
   */
  constructor(
    name,
    wasmType,
    { ctype = null, pointer = false, dtype = null, isConst = false } = {},
  ) {
    this.name = name;
    this.wasmType = wasmType;
    this.ctype = ctype;
    this.pointer = pointer;
    this.dtype = dtype;
    /** For a pointer with a known pointee: the typed array it takes. */
    this.array = pointer && dtype !== null ? ARRAY_OF[dtype] : null;
    this.const = isConst;
    Object.freeze(this);
  }

  toString() {
    if (this.ctype === null) return `${this.wasmType} ${this.name}`;
    const sep = this.ctype.endsWith("*") ? "" : " ";
    return `${this.ctype}${sep}${this.name}`;
  }
}

/** A function of the kernel module that `pool.run` can call (`entry: name`). */
export class Entry {
  /**
   * @param {string} name
   * @param {string} exportName `entry:NAME`, or compute_partition
   * @param {number} index its position among the module's entries (the dispatch index)
   * @param {Param[]} params the parameters after (start, end)
   * @param {boolean} typed true when the module records the C signature
   */
  constructor(name, exportName, index, params, typed) {
    this.name = name;
    this.export = exportName;
    this.index = index;
    this.params = Object.freeze([...params]);
    this.typed = typed;
    Object.freeze(this);
  }

  /** The wasm types of the parameters after (start, end). */
  get wasmParams() {
    return this.params.map((p) => p.wasmType);
  }

  toString() {
    return `${this.name}(${["start", "end", ...this.params.map(String)].join(", ")})`;
  }
}

/**
 * Describe a parameter of C type `canonical` (typedefs resolved); `written`
 * is the type as the author wrote it, for messages.
 *
 * @returns {Param}
 * @throws {RangeError} the type cannot be passed to a kernel entry
 */
// Qualifiers of the pointer itself (`float *const x`, `float *restrict x`) say nothing
// about the array, so they are dropped before the pointee is read.
const TOP_QUALIFIERS = /\*(\s*\b(const|volatile|restrict|__restrict|__restrict__)\b)+\s*$/;

export function cParam(name, written, canonical) {
  canonical = canonical.trim().replace(TOP_QUALIFIERS, "*");
  if (canonical.trimEnd().endsWith("*") || canonical.includes("[")) {
    let pointee = canonical.trimEnd();
    if (pointee.endsWith("*")) pointee = pointee.slice(0, pointee.lastIndexOf("*"));
    // A pointer to pointers: unchecked, like void *.
    if (pointee.endsWith("*")) return new Param(name, "i32", { ctype: written, pointer: true });
    const isConst = /\bconst\b/.test(pointee);
    const base = baseType(pointee.split("[")[0]);
    const dtype = hasOwn(C_SCALARS, base) ? C_SCALARS[base][0] : null;
    return new Param(name, "i32", { ctype: written, pointer: true, dtype, isConst });
  }
  const base = baseType(canonical);
  if (!hasOwn(C_SCALARS, base)) {
    throw new RangeError(
      `parameter ${pyRepr(name)} has type ${pyRepr(written)}, which a kernel entry cannot ` +
        "take: use a number type (int, uint8_t, float, double, ...) or a pointer",
    );
  }
  const [dtype, wasmType] = C_SCALARS[base];
  return new Param(name, wasmType, { ctype: written, dtype });
}

const UTF8 = new TextDecoder("utf-8", { fatal: true });

/** The signature record's entries, or {} without one. */
function readRecord(payload) {
  if (payload === null || payload === undefined) return {};
  let record;
  try {
    record = JSON.parse(UTF8.decode(payload));
  } catch (err) {
    throw new KernelError(`the ${SIGNATURE_SECTION} custom section is not valid: ${err.message}`, {
      cause: err,
    });
  }
  const version = record !== null && typeof record === "object" ? record.version : undefined;
  if (version !== SIGNATURE_VERSION) {
    throw new KernelError(
      `${SIGNATURE_SECTION} must be version ${SIGNATURE_VERSION} ` +
        `(got ${JSON.stringify(version) ?? "None"}): rebuild the kernel with this sharedwasm`,
    );
  }
  const { entries } = record;
  if (entries === null || typeof entries !== "object" || Array.isArray(entries)) {
    const why = entries === undefined ? "'entries'" : "entries is not an object";
    throw new KernelError(`the ${SIGNATURE_SECTION} custom section is not valid: ${why}`);
  }
  return entries;
}

const signatureText = ({ params, results }) =>
  `function (${params.join(", ")}) -> (${results.join(", ")})`;

/**
 * Find the entries among a module's exports, in export order, with their
 * parameters, as `read_entries` does.
 *
 * @param {Map<string, {params: string[], results: string[]} | null>} exportedFunctions
 *   each exported function's signature (null for a non-function type)
 * @param {Map<string, string>} exports every export's kind, in export order
 * @param {Uint8Array | null} signatureSection the payload of the signature record
 * @returns {Map<string, Entry>} by entry name, in entry order
 * @throws {KernelError} there is none, one has the wrong shape, or the
 *   signature record disagrees with the wasm types
 */
export function readEntries(exportedFunctions, exports, signatureSection) {
  const record = readRecord(signatureSection);
  const entries = new Map();
  for (const [exportName, kind] of exports) {
    let name;
    if (exportName === LEGACY_ENTRY) {
      name = LEGACY_ENTRY;
    } else if (exportName.startsWith(ENTRY_PREFIX)) {
      name = exportName.slice(ENTRY_PREFIX.length);
      if (!name) {
        throw new KernelError(
          `export ${pyRepr(exportName)} must name its entry after ${pyRepr(ENTRY_PREFIX)}`,
        );
      }
    } else {
      continue;
    }
    const signature = kind === "func" ? (exportedFunctions.get(exportName) ?? null) : null;
    if (signature === null) {
      const got = kind === "func" ? "a function of a non-function type" : `a ${kind}`;
      throw new KernelError(`${exportName} must be a function (i32, i32, ...) -> () (got ${got})`);
    }
    const { params, results } = signature;
    const extra = params.slice(2);
    const shapeOk = params[0] === "i32" && params[1] === "i32" && results.length === 0;
    if (name === LEGACY_ENTRY && (extra.length || !shapeOk)) {
      throw new KernelError(
        `${LEGACY_ENTRY} must be a function (i32, i32) -> () (got ${signatureText(signature)}); ` +
          `an entry with more parameters is exported as ${ENTRY_PREFIX}NAME`,
      );
    }
    if (!shapeOk || extra.some((t) => !WASM_TYPES.includes(t))) {
      throw new KernelError(
        `${exportName} must be a function (i32 start, i32 end, then i32, i64, f32 or f64 ` +
          `parameters) -> () (got ${signatureText(signature)})`,
      );
    }
    if (extra.length > ARGUMENT_SLOTS) {
      throw new KernelError(
        `${exportName} must take at most ${ARGUMENT_SLOTS} parameters after (start, end) ` +
          `(got ${extra.length})`,
      );
    }
    const described = hasOwn(record, name) ? record[name] : undefined;
    let typed;
    let plist;
    if (described === undefined || described === null) {
      typed = false;
      plist = extra.map((t, i) => new Param(`arg${i}`, t));
    } else {
      typed = true;
      plist = typedParams(exportName, described, extra);
    }
    entries.set(name, new Entry(name, exportName, entries.size, plist, typed));
  }
  if (entries.size === 0) {
    throw new KernelError(
      `kernel must export an entry: ${LEGACY_ENTRY}(start: i32, end: i32), or functions ` +
        `named ${ENTRY_PREFIX}NAME taking (start: i32, end: i32, ...) (it has none)`,
    );
  }
  return entries;
}

function typedParams(exportName, described, extra) {
  if (!Array.isArray(described) || described.length !== extra.length) {
    const count = Array.isArray(described) ? described.length : JSON.stringify(described);
    throw new KernelError(
      `${exportName}'s recorded signature must list its ${extra.length} parameter(s) after ` +
        `(start, end) (got ${count}): the module's ${SIGNATURE_SECTION} section does not ` +
        "match its code",
    );
  }
  return described.map((item, i) => {
    const wasmType = extra[i];
    let param;
    let written;
    try {
      if (item === null || typeof item !== "object" || Array.isArray(item)) {
        throw new TypeError(`${JSON.stringify(item)} is not an object`);
      }
      for (const key of ["name", "type"]) {
        if (!hasOwn(item, key)) throw new TypeError(`'${key}'`);
      }
      written = String(item.type);
      const canonical = hasOwn(item, "canonical") ? String(item.canonical) : written;
      param = cParam(String(item.name) || `arg${i}`, written, canonical);
    } catch (err) {
      throw new KernelError(
        `${exportName}'s recorded parameter ${i} is not valid: ${err.message}`,
        {
          cause: err,
        },
      );
    }
    if (param.wasmType !== wasmType) {
      throw new KernelError(
        `${exportName}'s parameter ${pyRepr(param.name)} is recorded as ${pyRepr(written)}, ` +
          `which is ${param.wasmType} in wasm, but the function takes ${wasmType}: the ` +
          `module's ${SIGNATURE_SECTION} section does not match its code`,
      );
    }
    return param;
  });
}
