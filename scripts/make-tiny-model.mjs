#!/usr/bin/env node
// Writes a tiny, deterministic, randomly-initialised llama-architecture GGUF (v3, F32) that
// llama.cpp / node-llama-cpp load and generate with. It is meant for tests and local dev: the
// output is gibberish made of English words, but it is real inference and it depends on the
// prompt, the sampling parameters and the seed.
//
// Usage: node scripts/make-tiny-model.mjs [out.gguf]   (default models/tiny-sluice.gguf)
//
// Idempotent: the file is built in memory (a few ms) and only written when the bytes on disk
// differ; writes go to a temp file that is then renamed into place.
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, renameSync, writeFileSync, existsSync, unlinkSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const GENERATOR_VERSION = "sluice-tiny-1";

const SHAPE = {
  embd: 64,
  layers: 2,
  heads: 4,
  ff: 128,
  context: 2048,
};

// Word tokens the model is allowed to generate (as "▁word"), plus their prefixes for the SPM merges.
const WORDS = `the a an and of to in is it that was for on are with as his they be at one have this from
or had by but some what there we can out other were all your when up use word how said each she which do
their time if will way about many then them would write like so these her long make thing see him two has
look more day could go come did my sound no most number who over know water than call first people may
down side been now find any new work part take get place made live where after back little only round man
year came show every good me give our under name very through just form much great think say help low line
before turn cause same mean move right boy old too does tell set three want air well also play small end
put home read hand large add even land here must big high such follow act why ask men change went light
kind off need house picture try us again animal point mother world near build self earth father cat dog
river tree sun moon star sky rain quiet bright slow fast happy warm cold stone bird road song city garden
morning night story letter friend door window table paper music`.split(/\s+/);
const GENERATED_PUNCT = [".", ","];
const EXTRA_PIECES = ["s", "ed", "ing", "ly", "er", "'s", "n't"];
const CHARS = [
  ..."abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
  ...".,!?'\"-:;()/",
];
const SPACE = "\u2581";

const TOKEN_TYPE = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3, BYTE: 6 };

const CHAT_TEMPLATE =
  "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/** Vocabulary: tokens, scores, types and which ids the model may generate. */
function buildVocab() {
  /** @type {{ text: string, score: number, type: number, allowed: boolean }[]} */
  const entries = [];
  const seen = new Set();
  const add = (text, type, score, allowed = false) => {
    if (seen.has(text)) return;
    seen.add(text);
    entries.push({ text, type, score, allowed });
  };
  add("<unk>", TOKEN_TYPE.UNKNOWN, 0);
  add("<s>", TOKEN_TYPE.CONTROL, 0);
  add("</s>", TOKEN_TYPE.CONTROL, 0);
  for (let b = 0; b < 256; b++) add(`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`, TOKEN_TYPE.BYTE, 0);
  add("<|im_start|>", TOKEN_TYPE.CONTROL, 0);
  add("<|im_end|>", TOKEN_TYPE.CONTROL, 0);
  for (const c of [SPACE, ...CHARS]) add(c, TOKEN_TYPE.NORMAL, -1000, GENERATED_PUNCT.includes(c));
  // Longer pieces get higher scores so the SPM merger prefers them; every prefix of a word is
  // in the vocabulary so that the pairwise merges can always reach the whole word.
  const pieces = [...WORDS.map((w) => SPACE + w), ...EXTRA_PIECES];
  const full = new Set(WORDS.map((w) => SPACE + w));
  const prefixes = new Set();
  for (const p of pieces) for (let n = 2; n < [...p].length; n++) prefixes.add([...p].slice(0, n).join(""));
  for (const p of [...prefixes].sort()) add(p, TOKEN_TYPE.NORMAL, -100 + [...p].length);
  for (const p of pieces) add(p, TOKEN_TYPE.NORMAL, -100 + [...p].length, full.has(p));
  // A piece that is both a prefix and a word was added as a prefix first: mark it allowed.
  for (const e of entries) if (full.has(e.text)) e.allowed = true;
  return entries;
}

/** mulberry32: tiny seeded PRNG; gaussian() via Box-Muller. */
function makeRng(seed) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const gaussian = () => Math.sqrt(-2 * Math.log(1 - next())) * Math.cos(2 * Math.PI * next());
  return { next, gaussian };
}

/** A [rows x cols] row-major matrix (ggml ne = [cols, rows]) of N(0, std^2) values. */
function randomMatrix(rng, rows, cols, std) {
  const m = new Float32Array(rows * cols);
  for (let i = 0; i < m.length; i++) m[i] = rng.gaussian() * std;
  return { data: m, dims: [cols, rows] };
}

function ones(n) {
  return { data: new Float32Array(n).fill(1), dims: [n] };
}

// Residual dimension 0 is a constant 1 (set in every embedding, never written by attention or
// FFN outputs). output.weight turns it into a large bias: + for word tokens, - for everything
// else (bytes, control tokens, EOS, word prefixes), so generations are plain words to max_tokens.
const BIAS_DIM_WEIGHT = 10;

function buildTensors(vocab) {
  const rng = makeRng(0x5105e);
  const { embd, ff, layers } = SHAPE;
  const nVocab = vocab.length;
  const tensors = [];
  const tokEmbd = randomMatrix(rng, nVocab, embd, 0.35);
  for (let t = 0; t < nVocab; t++) tokEmbd.data[t * embd] = 1;
  tensors.push(["token_embd.weight", tokEmbd]);
  for (let l = 0; l < layers; l++) {
    const blk = `blk.${l}`;
    tensors.push([`${blk}.attn_norm.weight`, ones(embd)]);
    tensors.push([`${blk}.attn_q.weight`, randomMatrix(rng, embd, embd, 2 / Math.sqrt(embd))]);
    tensors.push([`${blk}.attn_k.weight`, randomMatrix(rng, embd, embd, 2 / Math.sqrt(embd))]);
    tensors.push([`${blk}.attn_v.weight`, randomMatrix(rng, embd, embd, 1 / Math.sqrt(embd))]);
    const wo = randomMatrix(rng, embd, embd, 0.6 / Math.sqrt(embd));
    wo.data.fill(0, 0, embd); // output row 0 -> residual dim 0 untouched
    tensors.push([`${blk}.attn_output.weight`, wo]);
    tensors.push([`${blk}.ffn_norm.weight`, ones(embd)]);
    tensors.push([`${blk}.ffn_gate.weight`, randomMatrix(rng, ff, embd, 1 / Math.sqrt(embd))]);
    tensors.push([`${blk}.ffn_up.weight`, randomMatrix(rng, ff, embd, 1 / Math.sqrt(embd))]);
    const down = randomMatrix(rng, embd, ff, 0.6 / Math.sqrt(ff));
    down.data.fill(0, 0, ff);
    tensors.push([`${blk}.ffn_down.weight`, down]);
  }
  tensors.push(["output_norm.weight", ones(embd)]);
  const output = randomMatrix(rng, nVocab, embd, 0.5);
  for (let t = 0; t < nVocab; t++) {
    const row = t * embd;
    // Discourage repeating the current token: subtract its own embedding direction.
    for (let i = 1; i < embd; i++) output.data[row + i] -= 1.5 * tokEmbd.data[row + i];
    output.data[row] = vocab[t].allowed ? BIAS_DIM_WEIGHT : -BIAS_DIM_WEIGHT;
  }
  tensors.push(["output.weight", output]);
  return tensors;
}

// --- GGUF serialisation -------------------------------------------------------------------

const GGUF_TYPE = { UINT32: 4, INT32: 5, FLOAT32: 6, BOOL: 7, STRING: 8, ARRAY: 9 };
const ALIGNMENT = 32;

class Writer {
  chunks = [];
  u32(v) { const b = Buffer.alloc(4); b.writeUInt32LE(v); this.chunks.push(b); }
  i32(v) { const b = Buffer.alloc(4); b.writeInt32LE(v); this.chunks.push(b); }
  u64(v) { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(v)); this.chunks.push(b); }
  f32(v) { const b = Buffer.alloc(4); b.writeFloatLE(v); this.chunks.push(b); }
  str(s) { const b = Buffer.from(s, "utf8"); this.u64(b.length); this.chunks.push(b); }
  bytes(b) { this.chunks.push(b); }
  get length() { return this.chunks.reduce((n, c) => n + c.length, 0); }
  pad() { const rem = this.length % ALIGNMENT; if (rem) this.chunks.push(Buffer.alloc(ALIGNMENT - rem)); }
  toBuffer() { return Buffer.concat(this.chunks); }
}

const kv = {
  u32: (v) => ({ type: GGUF_TYPE.UINT32, write: (w) => w.u32(v) }),
  f32: (v) => ({ type: GGUF_TYPE.FLOAT32, write: (w) => w.f32(v) }),
  bool: (v) => ({ type: GGUF_TYPE.BOOL, write: (w) => w.bytes(Buffer.from([v ? 1 : 0])) }),
  str: (v) => ({ type: GGUF_TYPE.STRING, write: (w) => w.str(v) }),
  arr: (elemType, values, writeOne) => ({
    type: GGUF_TYPE.ARRAY,
    write: (w) => { w.u32(elemType); w.u64(values.length); for (const v of values) writeOne(w, v); },
  }),
};

function buildMetadata(vocab) {
  const { embd, ff, layers, heads, context } = SHAPE;
  return [
    ["general.architecture", kv.str("llama")],
    ["general.name", kv.str("Sluice Tiny")],
    ["general.version", kv.str(GENERATOR_VERSION)],
    ["general.file_type", kv.u32(0)], // ALL_F32
    ["general.alignment", kv.u32(ALIGNMENT)],
    ["llama.context_length", kv.u32(context)],
    ["llama.embedding_length", kv.u32(embd)],
    ["llama.block_count", kv.u32(layers)],
    ["llama.feed_forward_length", kv.u32(ff)],
    ["llama.attention.head_count", kv.u32(heads)],
    ["llama.attention.head_count_kv", kv.u32(heads)],
    ["llama.rope.dimension_count", kv.u32(embd / heads)],
    ["llama.rope.freq_base", kv.f32(10000)],
    ["llama.attention.layer_norm_rms_epsilon", kv.f32(1e-5)],
    ["llama.vocab_size", kv.u32(vocab.length)],
    ["tokenizer.ggml.model", kv.str("llama")],
    ["tokenizer.ggml.tokens", kv.arr(GGUF_TYPE.STRING, vocab.map((e) => e.text), (w, v) => w.str(v))],
    ["tokenizer.ggml.scores", kv.arr(GGUF_TYPE.FLOAT32, vocab.map((e) => e.score), (w, v) => w.f32(v))],
    ["tokenizer.ggml.token_type", kv.arr(GGUF_TYPE.INT32, vocab.map((e) => e.type), (w, v) => w.i32(v))],
    ["tokenizer.ggml.unknown_token_id", kv.u32(0)],
    ["tokenizer.ggml.bos_token_id", kv.u32(1)],
    ["tokenizer.ggml.eos_token_id", kv.u32(2)],
    ["tokenizer.ggml.add_bos_token", kv.bool(true)],
    ["tokenizer.ggml.add_eos_token", kv.bool(false)],
    ["tokenizer.chat_template", kv.str(CHAT_TEMPLATE)],
  ];
}

function serialize(metadata, tensors) {
  const w = new Writer();
  w.bytes(Buffer.from("GGUF", "latin1"));
  w.u32(3);
  w.u64(tensors.length);
  w.u64(metadata.length);
  for (const [key, value] of metadata) {
    w.str(key);
    w.u32(value.type);
    value.write(w);
  }
  let offset = 0;
  for (const [name, t] of tensors) {
    w.str(name);
    w.u32(t.dims.length);
    for (const d of t.dims) w.u64(d);
    w.u32(0); // GGML_TYPE_F32
    w.u64(offset);
    offset += Math.ceil((t.data.length * 4) / ALIGNMENT) * ALIGNMENT;
  }
  w.pad();
  for (const [, t] of tensors) {
    const b = Buffer.alloc(t.data.length * 4);
    for (let i = 0; i < t.data.length; i++) b.writeFloatLE(t.data[i], i * 4);
    w.bytes(b);
    w.pad();
  }
  return w.toBuffer();
}

export function buildTinyModel() {
  const vocab = buildVocab();
  return serialize(buildMetadata(vocab), buildTensors(vocab));
}

const sha256 = (buf) => createHash("sha256").update(buf).digest("hex");

/** Writes the model to `outPath` unless an identical file is already there. Returns true if written. */
export function writeTinyModel(outPath) {
  const bytes = buildTinyModel();
  if (existsSync(outPath) && sha256(readFileSync(outPath)) === sha256(bytes)) return false;
  mkdirSync(dirname(outPath), { recursive: true });
  const tmp = `${outPath}.${process.pid}.${Date.now()}.tmp`;
  try {
    writeFileSync(tmp, bytes);
    renameSync(tmp, outPath);
  } catch (err) {
    if (existsSync(tmp)) unlinkSync(tmp);
    throw err;
  }
  return true;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
  const out = resolve(process.argv[2] ?? resolve(root, "models/tiny-sluice.gguf"));
  const written = writeTinyModel(out);
  console.log(`${written ? "wrote" : "up to date"}: ${out}`);
}
