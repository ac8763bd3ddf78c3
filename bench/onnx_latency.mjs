// ONNX Runtime latency of a bpnas QDQ export against the FP32 export of the same network
// (`bpnas export --float`), on 2 intra-op threads, at batch 1 and batch 128, both measured in this
// one run: rounds alternate between the two models so that a noisy neighbour slows both alike.
// For information; there is no target.
//
//   node bench/onnx_latency.mjs QDQ.onnx FLOAT.onnx [--seconds S]
//
// Prints one line per batch size: the median milliseconds per batch of each model and their
// ratio (QDQ / FP32; above 1: the QDQ model is slower). The QDQ model runs twice: with ONNX
// Runtime's defaults (its QDQ rewrites on) and with them off ("exact", tests/onnx/run_onnx.mjs),
// where ONNX Runtime folds each weight DequantizeLinear into a float constant once.
import { createSession, ort } from '../tests/onnx/run_onnx.mjs';

function median(v) {
  const s = [...v].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function timeOne(session, feeds) {
  const t0 = process.hrtime.bigint();
  await session.run(feeds);
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

async function main() {
  const [qdqPath, floatPath, ...rest] = process.argv.slice(2);
  if (!qdqPath || !floatPath) {
    console.error('usage: node bench/onnx_latency.mjs QDQ.onnx FLOAT.onnx [--seconds S]');
    process.exit(2);
  }
  const seconds = rest[0] === '--seconds' ? Number(rest[1]) : 5;
  const qdq = await createSession(qdqPath);
  const exact = await createSession(qdqPath, { exact: true });
  const fp32 = await createSession(floatPath);
  const [, c, h, w] = qdq.inputMetadata?.[0]?.shape ?? [0, 1, 28, 28];
  for (const batch of [1, 128]) {
    const data = new Float32Array(batch * c * h * w);
    for (let i = 0; i < data.length; ++i) data[i] = ((i * 2654435761) % 256) / 255;  // fixed pseudo-pixels
    const feeds = { input: new ort.Tensor('float32', data, [batch, c, h, w]) };
    for (let i = 0; i < 5; ++i) {
      await qdq.run(feeds);
      await exact.run(feeds);
      await fp32.run(feeds);
    }
    const times = { qdq: [], exact: [], fp32: [] };
    const end = Date.now() + seconds * 1000;
    while (Date.now() < end || times.qdq.length < 5) {
      times.qdq.push(await timeOne(qdq, feeds));
      times.exact.push(await timeOne(exact, feeds));
      times.fp32.push(await timeOne(fp32, feeds));
    }
    const q = median(times.qdq), e = median(times.exact), f = median(times.fp32);
    console.log(`batch ${String(batch).padStart(3)}: QDQ ${q.toFixed(3)} ms (ratio to FP32 ${(q / f).toFixed(2)}), ` +
      `QDQ exact ${e.toFixed(3)} ms (ratio ${(e / f).toFixed(2)}), FP32 ${f.toFixed(3)} ms; ` +
      `${times.qdq.length} runs each, 2 threads`);
  }
}

main().catch((e) => {
  console.error(`onnx_latency: ${e.message}`);
  process.exit(1);
});
