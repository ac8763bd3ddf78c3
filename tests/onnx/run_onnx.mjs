// Runs a bpnas ONNX export with ONNX Runtime (onnxruntime-node, CPU) on the Fashion-MNIST test
// images it reads itself, the way a user outside bpnas would.
//
//   node run_onnx.mjs predict --model M.onnx --data DIR [--limit N] [--batch B]
//                             [--predictions FILE] [--logits FILE]
//       writes one predicted class per image (one a line) and/or the logits (one image a line,
//       space-separated); prints {"images", "accuracy"} as JSON.
//   node run_onnx.mjs grid --model M.onnx --data DIR --activations EXPORT.json [--limit N]
//                          [--predictions FILE]
//       the model must have been exported with `bpnas export --activations --json` (EXPORT.json is
//       that output): checks that every value v of every exposed activation satisfies
//       |v/scale - k| <= 1e-3 for an integer k in [0, 2^bits - 1]; prints a summary as JSON and
//       exits 1 on the first activation that does not.
//   --exact: ONNX Runtime's QDQ fusions off (see createSession).
//
// Input: pixel / 255 as float32, [N, 1, 28, 28] (bpnas.v1.QuantizedModel's input). ONNX Runtime
// runs on 2 intra-op threads.
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

// onnxruntime-node lives in this folder's node_modules (scripts/bootstrap.sh installs it); other
// scripts (bench/) import this module from elsewhere.
const require = createRequire(new URL('./package.json', import.meta.url));
export const ort = require('onnxruntime-node');

// The file `dir`/`name`, raw or gzip-compressed (the Debian package ships .gz).
function readMaybeGz(dir, name) {
  for (const candidate of [path.join(dir, name), path.join(dir, name + '.gz')]) {
    if (!fs.existsSync(candidate)) continue;
    const bytes = fs.readFileSync(candidate);
    return bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b ? zlib.gunzipSync(bytes) : bytes;
  }
  throw new Error(`${path.join(dir, name)}(.gz): not found`);
}

// IDX (big-endian header: magic 0x00000803 for images, 0x00000801 for labels, then the sizes).
export function readMnistTest(dir, limit = 0) {
  const images = readMaybeGz(dir, 't10k-images-idx3-ubyte');
  const labels = readMaybeGz(dir, 't10k-labels-idx1-ubyte');
  if (images.readUInt32BE(0) !== 0x803) throw new Error(`${dir}: bad magic in the test images`);
  if (labels.readUInt32BE(0) !== 0x801) throw new Error(`${dir}: bad magic in the test labels`);
  let count = images.readUInt32BE(4);
  const rows = images.readUInt32BE(8), cols = images.readUInt32BE(12);
  if (labels.readUInt32BE(4) !== count) throw new Error(`${dir}: image and label counts differ`);
  if (images.length !== 16 + count * rows * cols || labels.length !== 8 + count) {
    throw new Error(`${dir}: IDX sizes do not match their headers`);
  }
  if (limit > 0) count = Math.min(count, limit);
  const pixels = new Float32Array(count * rows * cols);
  for (let i = 0; i < pixels.length; ++i) pixels[i] = images[16 + i] / 255;
  return { count, rows, cols, pixels, labels: Uint8Array.from(labels.subarray(8, 8 + count)) };
}

// ONNX Runtime with its default (full) graph optimization, as a user runs it; or, with `exact`,
// with its QDQ rewrites off (session.disable_quant_qdq): then it runs every QuantizeLinear and
// DequantizeLinear as ONNX defines them instead of fusing them into its int8 kernels, whose u8s8
// arithmetic can saturate on x86 CPUs without VNNI (the difference shows at 8-bit layers).
export async function createSession(modelPath, { threads = 2, exact = false } = {}) {
  return ort.InferenceSession.create(modelPath, {
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
    ...(exact ? { extra: { session: { disable_quant_qdq: '1' } } } : {}),
  });
}

// Calls `consume(outputs, start, n)` for each batch of the data set.
export async function runBatches(session, data, batch, consume) {
  const per = data.rows * data.cols;
  for (let start = 0; start < data.count; start += batch) {
    const n = Math.min(batch, data.count - start);
    const input = new ort.Tensor('float32', data.pixels.subarray(start * per, (start + n) * per), [n, 1, data.rows, data.cols]);
    const outputs = await session.run({ input });
    consume(outputs, start, n);
  }
}

function argmax(values, offset, length) {
  let best = 0;
  for (let j = 1; j < length; ++j) if (values[offset + j] > values[offset + best]) best = j;
  return best;
}

export async function predict(session, data, batch) {
  const predictions = new Int32Array(data.count);
  const logits = [];
  await runBatches(session, data, batch, (outputs, start, n) => {
    const out = outputs.logits;
    const classes = out.dims[1];
    for (let i = 0; i < n; ++i) {
      predictions[start + i] = argmax(out.data, i * classes, classes);
      logits.push(Array.from(out.data.subarray(i * classes, (i + 1) * classes)));
    }
  });
  let correct = 0;
  for (let i = 0; i < data.count; ++i) correct += predictions[i] === data.labels[i] ? 1 : 0;
  return { predictions, logits, accuracy: (100 * correct) / data.count };
}

// Checks every exposed activation against its b-bit grid; returns a summary or throws.
export async function checkGrid(session, data, batch, activations) {
  const seen = new Map(activations.map((a) => [a.name, { ...a, values: 0, maxError: 0, maxCode: 0, distinct: new Set() }]));
  for (const a of activations) {
    if (!session.outputNames.includes(a.name)) throw new Error(`the model has no output ${a.name}: export it with --activations`);
  }
  const predictions = new Int32Array(data.count);
  await runBatches(session, data, batch, (outputs, start, n) => {
    for (const s of seen.values()) {
      const v = outputs[s.name].data;
      const top = 2 ** s.bits - 1;
      for (let i = 0; i < v.length; ++i) {
        const q = v[i] / s.scale;
        const k = Math.round(q);
        const error = Math.abs(q - k);
        if (!(error <= 1e-3) || k < 0 || k > top) {
          throw new Error(`${s.name}: value ${v[i]} = ${q} * scale ${s.scale} is not a ${s.bits}-bit code`);
        }
        s.values += 1;
        s.maxError = Math.max(s.maxError, error);
        s.maxCode = Math.max(s.maxCode, k);
        if (s.distinct.size <= top) s.distinct.add(k);
      }
    }
    const out = outputs.logits;
    const classes = out.dims[1];
    for (let i = 0; i < n; ++i) predictions[start + i] = argmax(out.data, i * classes, classes);
  });
  const layers = [...seen.values()].map((s) => ({
    name: s.name, bits: s.bits, values: s.values, max_error: s.maxError, max_code: s.maxCode, codes_used: s.distinct.size,
  }));
  return { layers, predictions };
}

function parseArgs(argv) {
  const args = { _: [] };
  for (let i = 0; i < argv.length; ++i) {
    if (argv[i] === '--exact') args.exact = true;
    else if (argv[i].startsWith('--')) args[argv[i].slice(2)] = argv[++i];
    else args._.push(argv[i]);
  }
  return args;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const command = args._[0];
  if (!args.model || !args.data || (command !== 'predict' && command !== 'grid')) {
    console.error('usage: node run_onnx.mjs predict|grid --model M.onnx --data DIR [--limit N] ...');
    process.exit(2);
  }
  const data = readMnistTest(args.data, Number(args.limit ?? 0));
  const batch = Number(args.batch ?? 500);
  const session = await createSession(args.model, { exact: 'exact' in args });
  if (command === 'predict') {
    const r = await predict(session, data, batch);
    if (args.predictions) fs.writeFileSync(args.predictions, r.predictions.join('\n') + '\n');
    if (args.logits) fs.writeFileSync(args.logits, r.logits.map((l) => l.join(' ')).join('\n') + '\n');
    console.log(JSON.stringify({ images: data.count, accuracy: r.accuracy }));
    return;
  }
  if (!args.activations) throw new Error('grid: --activations EXPORT.json is required');
  const exported = JSON.parse(fs.readFileSync(args.activations, 'utf8'));
  const r = await checkGrid(session, data, batch, exported.activations);
  if (args.predictions) fs.writeFileSync(args.predictions, r.predictions.join('\n') + '\n');
  console.log(JSON.stringify({ images: data.count, layers: r.layers }));
}

if (process.argv[1] && fileURLToPath(import.meta.url) === fs.realpathSync(process.argv[1])) {
  main().catch((e) => {
    console.error(`run_onnx: ${e.message}`);
    process.exit(1);
  });
}
