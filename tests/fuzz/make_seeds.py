#!/usr/bin/env python3
"""Seed corpora for temper's fuzz targets, made from the repository's fixtures plus a few
hand-written variants that reach branches the fixtures do not (other rope forms, regex targets,
chat records, uint32 shards). Deterministic; run by the fuzz_seeds build target and by
scripts/sanitize.sh. Usage: make_seeds.py --source <repo> --out <dir>"""
import argparse
import json
import os
import struct
from pathlib import Path

MAX_SEED_BYTES = 64 * 1024  # larger fixtures (the parity models) would only slow every mutation


def write(out: Path, target: str, name: str, data: bytes) -> None:
    d = out / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def safetensors(tensors, metadata=None, pad=True) -> bytes:
    """tensors: list of (name, dtype, shape, raw bytes)."""
    header, offset, blobs = {}, 0, []
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def two_parts(first: bytes, second: bytes) -> bytes:
    return struct.pack("<I", len(first)) + first + second


def small_files(root: Path, pattern: str):
    for p in sorted(root.glob(pattern)):
        if p.is_file() and p.stat().st_size <= MAX_SEED_BYTES:
            yield p


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    src, out = a.source, a.out
    fixtures = src / "tests" / "fixtures"

    # safetensors: fixture files, and one small file per dtype.
    for i, p in enumerate(small_files(fixtures, "**/*.safetensors")):
        write(out, "fuzz_safetensors", f"fixture-{i}", p.read_bytes())
    sizes = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
             "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
    for dtype, size in sizes.items():
        write(out, "fuzz_safetensors", f"dtype-{dtype}",
              safetensors([("a", dtype, [2, 3], bytes(range(6 * size))), ("b", dtype, [], bytes(size))],
                          metadata={"format": "pt"}))
    write(out, "fuzz_safetensors", "empty-tensor", safetensors([("e", "F32", [0, 4], b""), ("x", "F32", [1], b"\0" * 4)]))
    write(out, "fuzz_safetensors", "misaligned", safetensors([("a", "U8", [3], b"abc"), ("b", "F32", [2], b"\0" * 8)], pad=False))

    # config.json: every fixture's, and the other rope forms and families.
    configs = [p for p in sorted(fixtures.glob("**/config.json"))] + [src / "assets" / "model" / "config.json"]
    for i, p in enumerate(configs):
        write(out, "fuzz_config_json", f"fixture-{i}", p.read_bytes())
    base = json.loads((src / "assets" / "model" / "config.json").read_text())
    variants = {
        "llama3-rope": dict(base, rope_parameters=None, rope_theta=500000.0,
                            rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                          "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}),
        "linear-rope": dict(base, rope_parameters=None, rope_scaling={"type": "linear", "factor": 2.0}),
        "qwen2": dict(base, model_type="qwen2", use_sliding_window=False, eos_token_id=[2, 3]),
        "mistral": dict(base, model_type="mistral", sliding_window=16, torch_dtype="float32"),
        "llama-bias": dict(base, attention_bias=True, mlp_bias=True, num_key_value_heads=None, head_dim=8.0),
    }
    for name, cfg in variants.items():
        write(out, "fuzz_config_json", name, json.dumps({k: v for k, v in cfg.items() if v is not None}).encode())

    # tokenizer_config.json.
    write(out, "fuzz_tokenizer_config", "bundled", (src / "assets" / "model" / "tokenizer_config.json").read_bytes())
    write(out, "fuzz_tokenizer_config", "content-objects", json.dumps({
        "bos_token": {"content": "<s>", "lstrip": False}, "eos_token": {"content": "<|im_end|>"},
        "pad_token": "<pad>", "add_bos_token": False, "add_eos_token": True,
        "chat_template": "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"}).encode())
    write(out, "fuzz_tokenizer_config", "template-list", json.dumps({
        "eos_token": "<|eot_id|>",
        "chat_template": [{"name": "default", "template": "<|start_header_id|>x<|end_header_id|><|eot_id|>"},
                          {"name": "tool_use", "template": "[INST] <<SYS>>"}]}).encode())

    # adapter_config.json.
    peft_configs = sorted(fixtures.glob("**/adapter_config.json"))
    for i, p in enumerate(peft_configs):
        write(out, "fuzz_peft_config", f"fixture-{i}", p.read_bytes())
    lora = json.loads((fixtures / "peft" / "lora" / "adapter_config.json").read_text())
    for name, cfg in {
        "regex": dict(lora, target_modules=r".*\.(q|v)_proj", exclude_modules=["layers.1.self_attn.q_proj"]),
        "patterns": dict(lora, rank_pattern={r"layers\.0\..*": 2, "v_proj": 3}, alpha_pattern={"q_proj": 16.5}),
        "all-linear": dict(lora, target_modules="all-linear", init_lora_weights="gaussian", use_rslora=True),
        "dora": dict(lora, use_dora=True, lora_dropout=0.1, exclude_modules=r".*down_proj"),
    }.items():
        text = json.dumps(cfg).encode()
        write(out, "fuzz_peft_config", name, text)
        write(out, "fuzz_peft_adapter", f"config-{name}",
              two_parts(text, (fixtures / "peft" / "lora" / "adapter_model.safetensors").read_bytes()))

    # Adapter directories for the llama_gqa parity model.
    for variant in ("lora", "rslora", "dora"):
        d = fixtures / "peft" / variant
        if d.is_dir():
            write(out, "fuzz_peft_adapter", variant,
                  two_parts((d / "adapter_config.json").read_bytes(), (d / "adapter_model.safetensors").read_bytes()))

    # JSONL: byte 0 = format (0 text, 1 instruction, 2 chat; +0x80 = fail on malformed), byte 1 = seek index.
    text_lines = [json.dumps({"text": "The heart pumps blood through the body."}),
                  "", '{"text": 42}', "not json", json.dumps({"text": "Ünïcödé and 中文 text", "id": 7}),
                  '{"text": "' + "long " * 150 + '"}']
    instr_lines = [json.dumps({"instruction": "Define otitis.", "output": "Inflammation of the ear."}),
                   json.dumps({"instruction": "Translate", "input": "bonjour", "output": "hello", "system": "Be brief."}),
                   '{"instruction": "x"}', "[1, 2]"]
    chat_lines = [json.dumps({"messages": [{"role": "system", "content": "You are a doctor."},
                                           {"role": "user", "content": "What is otitis?"},
                                           {"role": "assistant", "content": "Inflammation of the ear."}]}),
                  json.dumps({"messages": [{"role": "user", "content": "hi"}]}),
                  json.dumps({"messages": [{"role": "robot", "content": "beep"}, {"role": "assistant", "content": "x"}]})]
    for fmt, lines in ((0, text_lines), (1, instr_lines), (2, chat_lines)):
        body = ("\r\n" if fmt == 1 else "\n").join(lines).encode()
        write(out, "fuzz_jsonl", f"format-{fmt}", bytes([fmt, 1]) + body)
        write(out, "fuzz_jsonl", f"format-{fmt}-fail", bytes([fmt | 0x80, 0]) + b"\xef\xbb\xbf" + body)

    # Token shards: index (magic, width, reserved, N, offsets) and tokens.
    for width, docs in ((2, [[1, 2, 3], [4], [5, 6]]), (4, [[70000, 1], [2147483647], [4294967295, 3]])):
        offsets = [0]
        for d in docs:
            offsets.append(offsets[-1] + len(d))
        index = b"TMPRSHD1" + struct.pack("<IIQ", width, 0, len(docs)) + b"".join(struct.pack("<Q", o) for o in offsets)
        tokens = b"".join(struct.pack("<H" if width == 2 else "<I", t) for d in docs for t in d)
        write(out, "fuzz_token_shard", f"width-{width}", two_parts(index, tokens))

    # bitsandbytes NF4 quant_state: the JSON, then a safetensors file with the state's tensors.
    for shape, blocksize, nested in (([4, 8], 64, False), ([3, 40], 32, True), ([2, 300], 64, True), ([7], 64, False)):
        n = 1
        for d in shape:
            n *= d
        blocks = (n + blocksize - 1) // blocksize
        meta = {"quant_type": "nf4", "blocksize": blocksize, "dtype": "bfloat16", "shape": shape}
        levels = struct.pack("<16f", *[-1.0 + i * 2.0 / 15 for i in range(16)])
        tensors = [("w.weight", "U8", [(n + 1) // 2, 1], bytes((i * 37) % 256 for i in range((n + 1) // 2))),
                   ("w.weight.quant_map", "F32", [16], levels)]
        if nested:
            meta.update(nested_blocksize=256, nested_dtype="float32", nested_offset=0.25)
            nested_blocks = (blocks + 255) // 256
            tensors += [("w.weight.absmax", "U8", [blocks], bytes((i * 11) % 256 for i in range(blocks))),
                        ("w.weight.nested_absmax", "F32", [nested_blocks], struct.pack(f"<{nested_blocks}f", *[0.5] * nested_blocks)),
                        ("w.weight.nested_quant_map", "F32", [256], struct.pack("<256f", *[(i - 128) / 128 for i in range(256)]))]
        else:
            tensors.append(("w.weight.absmax", "F32", [blocks], struct.pack(f"<{blocks}f", *[1.0 + i for i in range(blocks)])))
        name = f"nf4-{'x'.join(map(str, shape))}-b{blocksize}{'-dq' if nested else ''}"
        write(out, "fuzz_quant_state", name, two_parts(json.dumps(meta).encode(), safetensors(tensors)))
    # tokenizer.json: each fixture style (BLOOM, Qwen2, LLaMA-3, GPT-2) cut down to its first 400
    # vocabulary entries and the merges among them (the fixtures are ~190 KB), and a hand-sized
    # byte-level one; the text part mixes ASCII, accents, CJK, digits, added tokens, invalid UTF-8.
    text = "Hello world, it's 2024!\n  naïve café 東京 <|im_start|> <s>\t end".encode() + b"\xff\xc3"
    for style_dir in sorted((fixtures / "tokenizers").glob("*/tokenizer.json")):
        doc = json.loads(style_dir.read_text())
        model = doc["model"]
        vocab = {k: v for k, v in model["vocab"].items() if v < 400}
        merges = []
        for m in model["merges"]:
            a, b = m if isinstance(m, list) else m.split(" ", 1)
            if a in vocab and b in vocab and a + b in vocab:
                merges.append(m)
        model["vocab"], model["merges"] = vocab, merges
        doc["added_tokens"] = [t for t in doc.get("added_tokens", []) if t["id"] < 400 or t["special"]][:8]
        write(out, "fuzz_tokenizer_json", f"fixture-{style_dir.parent.name}",
              two_parts(json.dumps(doc, ensure_ascii=False).encode(), text))
    tiny = {"version": "1.0",
            "added_tokens": [{"id": 9, "content": "<s>", "special": True, "single_word": False, "lstrip": False,
                              "rstrip": False, "normalized": False},
                             {"id": 10, "content": "[M]", "special": False, "single_word": False, "lstrip": True,
                              "rstrip": True, "normalized": False}],
            "normalizer": {"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Prepend", "prepend": "_"}]},
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
            "post_processor": {"type": "TemplateProcessing",
                               "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                               "special_tokens": {"<s>": {"id": "<s>", "ids": [9], "tokens": ["<s>"]}}},
            "decoder": {"type": "ByteLevel"},
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "ignore_merges": False,
                      "vocab": {"a": 0, "b": 1, "c": 2, "\u0120": 3, "ab": 4, "abc": 5, "\u0120a": 6, "bc": 7, "cab": 8},
                      "merges": ["a b", "b c", "ab c", "\u0120 a"]}}
    write(out, "fuzz_tokenizer_json", "tiny-byte-level", two_parts(json.dumps(tiny).encode(), b"abc cab [M] <s> ab\xff"))
    plain = {"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "-": 2, "a-": 3, "-b": 4, "--": 6},
                       "merges": ["a -", "- b", "- -"]},
             "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "-+|[ab]+"}, "behavior": "Isolated", "invert": False}}
    write(out, "fuzz_tokenizer_json", "plain-split", two_parts(json.dumps(plain).encode(), b"a-b--ab"))
    # C ABI options: byte 0 = struct (0 model, 1 generation, 2 LoRA), struct_size, scalar fields.
    model_fields = struct.pack("<5i", 0, 0, 0, 0, 0)
    gen_fields = struct.pack("<Iqddq", 0, 4, 0.0, 1.0, 0) + bytes([0, 8])
    lora_fields = struct.pack("<iqddii", 0, 4, 0.0, 0.0, 0, 0) + bytes([1, 0]) + struct.pack("<qii", 7, 0, 0)
    for kind, size, fields in ((0, 24, model_fields), (1, 56, gen_fields), (2, 72, lora_fields)):
        for variant, struct_size, tail in (("current", size, b""), ("older", 16, b""), ("newer-zero", size + 16, bytes(16)),
                                           ("newer-set", size + 16, bytes(7) + b"\x01" + bytes(8))):
            write(out, "fuzz_capi_options", f"kind{kind}-{variant}", bytes([kind]) + struct.pack("<I", struct_size) + fields + tail)

if __name__ == "__main__":
    main()
