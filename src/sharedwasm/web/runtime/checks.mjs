// How the runtime names values in its messages, and the checks of plain
// arguments that every module shares. Messages follow the Python package's
// form: "<name> must be <constraint> (got <value>)".

/** The constructors of the typed arrays, by name. */
export const TYPED_ARRAYS = Object.freeze({
  Int8Array,
  Uint8Array,
  Uint8ClampedArray,
  Int16Array,
  Uint16Array,
  Int32Array,
  Uint32Array,
  Float32Array,
  Float64Array,
  BigInt64Array,
  BigUint64Array,
});

const TYPED_ARRAY_CONSTRUCTORS = new Set(Object.values(TYPED_ARRAYS));
if (typeof globalThis.Float16Array === "function") {
  TYPED_ARRAY_CONSTRUCTORS.add(globalThis.Float16Array);
}

/** True for a typed array (an ArrayBuffer view that is not a DataView). */
export const isTypedArray = (value) => ArrayBuffer.isView(value) && !(value instanceof DataView);

/** True for a typed array constructor (Float32Array, ...). */
export const isTypedArrayConstructor = (value) => TYPED_ARRAY_CONSTRUCTORS.has(value);

/** True for the typed arrays whose elements are BigInts. */
export const isBigIntArray = (Ctor) => Ctor === BigInt64Array || Ctor === BigUint64Array;

/** A value as a message shows it: strings quoted, typed arrays by their type. */
export function describe(value) {
  if (typeof value === "string") {
    const text = JSON.stringify(value);
    return text.length <= 60 ? text : `${text.slice(0, 57)}..."`;
  }
  if (typeof value === "bigint") return `${value}n`;
  if (typeof value === "function") return value.name || "a function";
  if (isTypedArray(value)) return value.constructor.name;
  if (Array.isArray(value)) return `an Array of length ${value.length}`;
  if (value !== null && typeof value === "object") {
    const name = value.constructor?.name;
    if (!name || name === "Object") return "an object";
    return /^[AEIOU]/.test(name) ? `an ${name}` : `a ${name}`;
  }
  return String(value);
}

/** Check that `value` is an integer in [low, high]; return it. */
export function checkInteger(name, value, low, high, unit = "") {
  if (typeof value !== "number" || !Number.isInteger(value)) {
    throw new TypeError(`${name} must be an integer${unit} (got ${describe(value)})`);
  }
  if (value < low || value > high) {
    const range = high === Infinity ? `>= ${low}` : `in [${low}, ${high}]`;
    throw new RangeError(`${name} must be ${range}${unit} (got ${value})`);
  }
  return value;
}

/** Check that `Ctor` is a typed array constructor; return it. */
export function checkConstructor(name, Ctor) {
  if (!isTypedArrayConstructor(Ctor)) {
    throw new TypeError(
      `${name} must be a typed array constructor, such as Float32Array (got ${describe(Ctor)})`,
    );
  }
  return Ctor;
}
