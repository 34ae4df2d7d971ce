// Validates Kubernetes manifests against the Kubernetes API's own schema (the OpenAPI
// definitions compiled into kubernetes-models' validators, ajv underneath), offline.
//
//   node validate.mjs FILE.yaml...      every document of every file; exit 1 on any error
//   node validate.mjs --self-test       a known-bad manifest must be rejected
//
// Each document's apiVersion/kind picks its model (apps/v1 DaemonSet ->
// kubernetes-models/apps/v1/DaemonSet); a kind with no model is an error, not a skip.
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";

async function model(apiVersion, kind) {
  const path = `kubernetes-models/${apiVersion}/${kind}`;
  try {
    return (await import(path))[kind];
  } catch (e) {
    throw new Error(`no schema for ${apiVersion} ${kind} (${path}): ${e.message}`);
  }
}

async function validate(doc) {
  const Model = await model(doc.apiVersion, doc.kind);
  new Model(doc).validate();  // throws with the schema path of the first violation
}

async function validateFile(file) {
  let errors = 0, count = 0;
  for (const d of parseAllDocuments(readFileSync(file, "utf8"))) {
    if (d.errors.length) {
      console.log(`${file}: YAML: ${d.errors[0].message}`);
      errors++;
      continue;
    }
    const doc = d.toJS();
    if (doc == null) continue;
    count++;
    const name = `${file}: ${doc.kind} ${doc.metadata?.name}`;
    try {
      await validate(doc);
      console.log(`${name}: valid`);
    } catch (e) {
      console.log(`${name}: INVALID: ${e.message.split("\n").slice(0, 4).join(" | ")}`);
      errors++;
    }
  }
  if (count === 0) {
    console.log(`${file}: no documents`);
    errors++;
  }
  return errors;
}

async function selfTest() {
  const bad = [
    { apiVersion: "apps/v1", kind: "DaemonSet", metadata: { name: "x" },
      spec: { selector: {}, template: { spec: { hostPID: "yes", containers: [{ image: "i" }] } } } },
    { apiVersion: "v1", kind: "Service", metadata: { name: "x" },
      spec: { ports: [{ port: "http" }] } },
  ];
  let rejected = 0;
  for (const doc of bad) {
    try {
      await validate(doc);
      console.log(`self-test: ${doc.kind} with schema errors was accepted`);
    } catch (e) {
      rejected++;
    }
  }
  return rejected === bad.length ? 0 : 1;
}

const args = process.argv.slice(2);
let errors = 0;
if (args[0] === "--self-test") {
  errors = await selfTest();
} else {
  for (const f of args) errors += await validateFile(f);
}
process.exit(errors ? 1 : 0);
