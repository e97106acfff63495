"""Bytes of the safetensors of a small Llama-style model built here (random weights, saved with
save_pretrained), of `evoproxy quantize --save-pretrained` (dequantized floats) and of `--packed`
(compressed-tensors pack-quantized integers), for a few bits files; and, after `transformers` loads
each packed folder, the largest difference of its weights and logits from the dequantized one's.

    python benchmarks/packed_size.py [--hidden 256] [--layers 4] [--group-size 128]

The model: hidden size --hidden, MLP width 3 × hidden, --layers blocks, 4 attention heads, a vocabulary
of 256 (the shipped text as bytes is its data, 8 windows of 128: only the file is measured). Bits files:
uniform 8-bit and 4-bit, and one that repeats 2, 3, 4 bits over the projections (3 bits on average);
embeddings and the head stay in float32, as by default. Six quantize runs: several minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
from pathlib import Path

import torch

from evoproxy.cli import main as evoproxy
from evoproxy.table import format_table


def safetensors_bytes(folder: Path) -> int:
    """Bytes of the .safetensors files in `folder`."""
    return sum(f.stat().st_size for f in folder.glob("*.safetensors"))


def main() -> None:
    import transformers

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", type=int, default=256, help="hidden size (default 256)")
    p.add_argument("--layers", type=int, default=4, help="transformer blocks (default 4)")
    p.add_argument("--group-size", default="128", help="group size, or channel (default 128)")
    args = p.parse_args()
    config = transformers.LlamaConfig(
        vocab_size=256,
        hidden_size=args.hidden,
        intermediate_size=3 * args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config)
    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n != "lm_head"]
    parameters = sum(model.get_submodule(n).weight.numel() for n in names)
    settings = {"uniform 8-bit": [8] * len(names), "uniform 4-bit": [4] * len(names)}
    settings["2/3/4-bit mix"] = [(2, 3, 4)[i % 3] for i in range(len(names))]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model.save_pretrained(root / "model")
        rows.append({"model": "float32 (save_pretrained)", "bytes": safetensors_bytes(root / "model")})
        for label, bits in settings.items():
            (root / "bits.json").write_text(
                json.dumps({"layers": [{"name": n} for n in names], "bits": bits, "act_bits": 32})
            )
            argv = ["quantize", "--model", f"hf:{root / 'model'}", "--bits-file", str(root / "bits.json")]
            argv += ["--group-size", args.group_size, "--seq-len", "128", "--eval-size", "8"]
            with contextlib.redirect_stdout(io.StringIO()):
                assert evoproxy([*argv, "--save-pretrained", str(root / "fake")]) == 0
                assert evoproxy([*argv, "--save-pretrained", str(root / "packed"), "--packed"]) == 0
            fake = transformers.AutoModelForCausalLM.from_pretrained(root / "fake")
            packed = transformers.AutoModelForCausalLM.from_pretrained(root / "packed")
            tokens = torch.randint(0, 256, (2, 64), generator=torch.Generator().manual_seed(0))
            with torch.no_grad():  # the packed model decompresses on its first forward
                logits = (packed(tokens).logits - fake(tokens).logits).abs().max().item()
            weights = max(
                (packed.get_submodule(n).weight - fake.get_submodule(n).weight).abs().max().item() for n in names
            )
            for kind in ("fake", "packed"):
                rows.append(
                    {
                        "model": f"{label}, {'dequantized' if kind == 'fake' else 'packed'}",
                        "bytes": safetensors_bytes(root / kind),
                        "weights": weights if kind == "packed" else "",
                        "logits": logits if kind == "packed" else "",
                    }
                )
    for row in rows:
        row["ratio"] = f"{rows[0]['bytes'] / row['bytes']:.2f}×"
        row.setdefault("weights", "")
        row.setdefault("logits", "")
    print(
        f"Llama-style, hidden {args.hidden}, {args.layers} blocks: {parameters} weights in {len(names)} projections, "
        f"groups of {args.group_size}, symmetric; torch {torch.__version__}, transformers {transformers.__version__}"
    )
    headers = ["safetensors of", "bytes", "smaller", "max |Δ weight|", "max |Δ logit|"]
    print(format_table(rows, ["model", "bytes", "ratio", "weights", "logits"], headers))


if __name__ == "__main__":
    main()
