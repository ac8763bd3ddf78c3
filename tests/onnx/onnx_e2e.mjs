// The ctest cases that run bpnas ONNX exports with ONNX Runtime (tests/CMakeLists.txt, through
// run_test.sh, which skips when node or onnxruntime-node is missing).
//
//   node onnx_e2e.mjs grid --work DIR        random resnet20 models at 2..8 bits
//   node onnx_e2e.mjs agreement --work DIR   a model trained by `bpnas search`
//
// Environment: BPNAS_BIN_DIR (bpnas, bpnas_make_random_model), BPNAS_DATA_DIR (Fashion-MNIST).
// Exit 0 pass, 1 fail (the reason on stderr).
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { checkGrid, createSession, predict, readMnistTest } from './run_onnx.mjs';

const bin = process.env.BPNAS_BIN_DIR;
const dataDir = process.env.BPNAS_DATA_DIR || '/usr/share/datasets/fashion-mnist';

function run(tool, args) {
  try {
    return execFileSync(path.join(bin, tool), args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    throw new Error(`${tool} ${args.join(' ')} failed (exit ${e.status}):\n${e.stderr}`);
  }
}

function readClasses(file) {
  return fs.readFileSync(file, 'utf8').trim().split('\n').map(Number);
}

// Fraction of images (in %) on which two runtimes pick the same class.
function agreement(a, b) {
  if (a.length !== b.length) throw new Error(`prediction counts differ: ${a.length} vs ${b.length}`);
  let same = 0;
  for (let i = 0; i < a.length; ++i) same += a[i] === b[i] ? 1 : 0;
  return (100 * same) / a.length;
}

function distinct(classes) {
  return new Set(classes).size;
}

// Each bitwidth 2..8, every layer at it (weights too; per-channel scales at even bits, per-tensor
// at odd): every exposed activation is k * scale with k an integer in [0, 2^b - 1], and ONNX
// Runtime's classes agree with `bpnas eval` (the fake-quantized interpreter) on >= 99% of the
// images. ONNX Runtime runs with its QDQ fusions off (createSession's `exact`): this test is about
// the graph meaning what the model means; its int8 kernels are the agreement test's part, and their
// agreement here is printed, not required (random 8-bit weights and activations are the worst case
// for their u8s8 saturation on CPUs without VNNI).
async function gridTest(work) {
  const images = 1000;
  const data = readMnistTest(dataDir, images);
  let failed = false;
  for (let bits = 2; bits <= 8; ++bits) {
    const model = path.join(work, `random${bits}.bpq`);
    const onnx = path.join(work, `random${bits}.onnx`);
    const fq = path.join(work, `random${bits}.bpnas.txt`);
    run('bpnas_make_random_model', ['--graph', 'resnet20', '--width', '0.25', '--bits', String(bits),
      '--seed', String(bits), '--center-logits', dataDir, ...(bits % 2 ? ['--per-tensor'] : []), '-o', model]);
    const exported = JSON.parse(run('bpnas', ['export', model, '-o', onnx, '--activations', '--json']));
    if (exported.activations.length !== 20) throw new Error(`${bits} bits: ${exported.activations.length} activations exposed, 20 expected`);
    const session = await createSession(onnx, { exact: true });
    const grid = await checkGrid(session, data, 250, exported.activations);  // throws off the grid
    run('bpnas', ['eval', model, '--data', dataDir, '--test-limit', String(images), '--predictions', fq]);
    const fake = readClasses(fq);
    const agree = agreement(fake, Array.from(grid.predictions));
    const fused = await predict(await createSession(onnx), data, 250);
    const agreeFused = agreement(fake, Array.from(fused.predictions));
    const values = grid.layers.reduce((n, l) => n + l.values, 0);
    const maxError = Math.max(...grid.layers.map((l) => l.max_error));
    const topUsed = grid.layers.filter((l) => l.max_code === 2 ** bits - 1).length;
    console.log(`${bits} bits: ${values} activation values on the grid (max |v/scale - k| ${maxError.toExponential(2)}, ` +
      `${topUsed}/20 layers reach code ${2 ** bits - 1}); top-1 agreement with bpnas eval ${agree.toFixed(2)}% ` +
      `on ${images} images (${distinct(fake)} classes predicted; with ONNX Runtime's default int8 fusions ${agreeFused.toFixed(2)}%)`);
    if (agree < 99) {
      console.error(`FAIL ${bits} bits: agreement ${agree}% < 99%`);
      failed = true;
    }
    if (distinct(fake) < 3) {
      console.error(`FAIL ${bits} bits: the random model predicts ${distinct(fake)} classes; the comparison is empty`);
      failed = true;
    }
  }
  return !failed;
}

// A model trained by `bpnas search`, exported, run by ONNX Runtime on all 10,000 test images:
// top-1 agreement with `bpnas eval --predictions` >= 99.5%, accuracies within 0.1 points.
async function agreementTest(work) {
  const spec = {
    name: 'onnx-agreement',
    model: { name: 'resnet20', width_multiplier: 0.25 },
    dataset: { kind: 'fashion-mnist', path: dataDir, train_limit: 3000, test_limit: 0 },
    constraint: { metric: 'BITOPS', max_relative_to_uniform_bits: 3 },
    search: { warmup_epochs: 1, epochs: 1, batch_size: 128 },
    finetune: { epochs: 1 },
    seed: 1,
  };
  const specPath = path.join(work, 'spec.json');
  const model = path.join(work, 'trained.bpq');
  const onnx = path.join(work, 'trained.onnx');
  const fq = path.join(work, 'trained.bpnas.txt');
  const ortPath = path.join(work, 'trained.onnxruntime.txt');
  fs.writeFileSync(specPath, JSON.stringify(spec));
  const t0 = Date.now();
  run('bpnas', ['search', '--spec', specPath, '--out', model, '--quiet', '--json']);
  const t1 = Date.now();
  run('bpnas', ['export', model, '-o', onnx]);
  const evalOut = JSON.parse(run('bpnas', ['eval', model, '--data', dataDir, '--test-limit', '10000', '--predictions', fq, '--json']));
  const t2 = Date.now();
  const data = readMnistTest(dataDir);
  const session = await createSession(onnx);
  const r = await predict(session, data, 500);
  const t3 = Date.now();
  fs.writeFileSync(ortPath, r.predictions.join('\n') + '\n');
  const fake = readClasses(fq);
  const agree = agreement(fake, Array.from(r.predictions));
  const diff = Math.abs(r.accuracy - evalOut.test_accuracy);
  console.log(`bpnas eval: ${evalOut.test_accuracy.toFixed(2)}% on ${evalOut.test_samples} images; ` +
    `ONNX Runtime: ${r.accuracy.toFixed(2)}% on ${data.count}; top-1 agreement ${agree.toFixed(2)}% ` +
    `(${Math.round(((100 - agree) * data.count) / 100)} images differ); accuracy difference ${diff.toFixed(2)} points`);
  console.log(`times: search ${(t1 - t0) / 1000}s, export + bpnas eval ${(t2 - t1) / 1000}s, ONNX Runtime ${(t3 - t2) / 1000}s`);
  let ok = true;
  if (data.count !== 10000 || evalOut.test_samples !== 10000) {
    console.error('FAIL: not all 10,000 test images were compared');
    ok = false;
  }
  if (agree < 99.5) {
    console.error(`FAIL: agreement ${agree}% < 99.5%`);
    ok = false;
  }
  if (diff > 0.1 + 1e-9) {
    console.error(`FAIL: accuracies differ by ${diff} points > 0.1`);
    ok = false;
  }
  return ok;
}

async function main() {
  const [command, flag, work] = process.argv.slice(2);
  if (!bin || flag !== '--work' || !work || !['grid', 'agreement'].includes(command)) {
    console.error('usage: BPNAS_BIN_DIR=... node onnx_e2e.mjs grid|agreement --work DIR');
    process.exit(2);
  }
  fs.rmSync(work, { recursive: true, force: true });
  fs.mkdirSync(work, { recursive: true });
  const ok = command === 'grid' ? await gridTest(work) : await agreementTest(work);
  process.exit(ok ? 0 : 1);
}

main().catch((e) => {
  console.error(`FAIL: ${e.message}`);
  process.exit(1);
});
