// A small JSON Schema check for edited review outputs: type, properties, required, additionalProperties, items,
// enum and const. Other keywords are not checked here; the server checks the whole schema (422) anyway.

const TYPES = {
  null: (v) => v === null,
  boolean: (v) => typeof v === "boolean",
  number: (v) => typeof v === "number",
  integer: (v) => Number.isInteger(v),
  string: (v) => typeof v === "string",
  array: (v) => Array.isArray(v),
  object: (v) => v !== null && typeof v === "object" && !Array.isArray(v),
};

/** The problems of `value` against `schema`, as readable strings ("$.a[0]: expected string"); [] when valid. */
export function validate(value, schema, path = "$") {
  if (schema === true || schema === undefined || schema === null) return [];
  if (schema === false) return [`${path}: no value is allowed here`];
  const problems = [];
  if (schema.type !== undefined) {
    const types = Array.isArray(schema.type) ? schema.type : [schema.type];
    if (!types.some((type) => TYPES[type]?.(value))) {
      return [`${path}: expected ${types.join(" or ")}, got ${kindOf(value)}`];
    }
  }
  if (schema.enum && !schema.enum.some((option) => same(option, value))) {
    problems.push(`${path}: must be one of ${schema.enum.map((o) => JSON.stringify(o)).join(", ")}`);
  }
  if ("const" in schema && !same(schema.const, value)) {
    problems.push(`${path}: must be ${JSON.stringify(schema.const)}`);
  }
  if (TYPES.object(value)) {
    const properties = schema.properties || {};
    for (const name of schema.required || []) {
      if (!(name in value)) problems.push(`${path}: "${name}" is required`);
    }
    for (const [name, item] of Object.entries(value)) {
      if (name in properties) problems.push(...validate(item, properties[name], `${path}.${name}`));
      else if (schema.additionalProperties === false) problems.push(`${path}: "${name}" is not allowed`);
      else if (typeof schema.additionalProperties === "object") {
        problems.push(...validate(item, schema.additionalProperties, `${path}.${name}`));
      }
    }
  }
  if (Array.isArray(value) && schema.items && typeof schema.items === "object") {
    value.forEach((item, i) => problems.push(...validate(item, schema.items, `${path}[${i}]`)));
  }
  return problems;
}

function kindOf(value) {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  if (Number.isInteger(value)) return "integer";
  return typeof value;
}

function same(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}
