#!/usr/bin/env python3
"""The comparisons tools/device/check.sh makes, in the standard library only (the GPU machine's
Python and this one's both run it; it reads safetensors itself).

  compare.py golden EXPECTED.safetensors OUT.safetensors
      `v3c run --grads` output against ../shared/golden/tiny/expected.safetensors, at the golden
      README's fp32 tolerances: logits (and mtpK.logits) relative L2 < 1e-4, every loss within
      1e-4, every grad.<name> of EXPECTED relative L2 < 1e-3.
  compare.py curve REFERENCE.jsonl RUN.jsonl [WINDOW]
      two `v3c train --log` files of the same run on two backends: the mean loss of each WINDOW
      steps (default 40; one batch's loss varies by a few percent) and their relative difference,
      which must stay within 1% (two full-precision runs whose learning rates differ by 1e-4 end
      up to 0.8% apart after 300 steps, docs/training.md: that is the trajectory's own noise).

Prints one line per check and exits 1 when any fails.
"""
import array
import json
import math
import struct
import sys

TYPECODES = {"F32": "f", "F64": "d", "I64": "q", "I32": "i"}


def read_safetensors(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        code = TYPECODES.get(info["dtype"])
        if code is None:
            continue
        lo, hi = info["data_offsets"]
        values = array.array(code)
        values.frombytes(data[lo:hi])
        if sys.byteorder != "little":
            values.byteswap()
        tensors[name] = values
    return tensors


def rel_l2(got, want):
    num = sum((float(g) - float(w)) ** 2 for g, w in zip(got, want))
    den = sum(float(w) ** 2 for w in want)
    return math.sqrt(num / den) if den > 0 else math.sqrt(num)


def golden(expected_path, out_path):
    want, got = read_safetensors(expected_path), read_safetensors(out_path)
    failures, checked = 0, 0
    worst_grad = (0.0, "")
    for name in sorted(want):
        if name == "input_ids" or name == "hidden_last":
            continue
        if name not in got:
            print(f"FAIL {name}: missing from {out_path}")
            failures += 1
            continue
        if len(got[name]) != len(want[name]):
            print(f"FAIL {name}: {len(got[name])} values, expected {len(want[name])}")
            failures += 1
            continue
        checked += 1
        if name.endswith("loss"):
            err, limit, what = abs(float(got[name][0]) - float(want[name][0])), 1e-4, "absolute"
        else:
            err = rel_l2(got[name], want[name])
            limit, what = (1e-3, "relative L2") if name.startswith("grad.") else (1e-4, "relative L2")
        if name.startswith("grad.") and err > worst_grad[0]:
            worst_grad = (err, name)
        if err > limit or math.isnan(err):
            print(f"FAIL {name}: {what} error {err:.3g} > {limit:g}")
            failures += 1
        elif not name.startswith("grad."):
            print(f"ok   {name}: {what} error {err:.3g} (limit {limit:g})")
    grads = sum(1 for n in want if n.startswith("grad."))
    print(f"{'ok  ' if not failures else 'FAIL'} golden: {checked} tensors compared ({grads} gradients, worst "
          f"{worst_grad[1]} at {worst_grad[0]:.3g}, limit 1e-3), {failures} failed")
    return failures == 0


def losses(path):
    try:
        with open(path) as f:
            return [json.loads(line)["loss"] for line in f if line.strip()]
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"FAIL curve: cannot read the losses of {path}: {e!r}")
        return None


def curve(reference_path, run_path, window=40):
    ref, run = losses(reference_path), losses(run_path)
    if ref is None or run is None:
        return False
    if len(ref) != len(run) or not ref:
        print(f"FAIL curve: {len(ref)} reference steps, {len(run)} run steps")
        return False
    worst = 0.0
    print("| steps | reference mean loss | run mean loss | difference |")
    print("|---|---|---|---|")
    for lo in range(0, len(ref), window):
        a = sum(ref[lo:lo + window]) / len(ref[lo:lo + window])
        b = sum(run[lo:lo + window]) / len(run[lo:lo + window])
        rel = (b - a) / a
        worst = max(worst, abs(rel))
        print(f"| {lo + 1}-{min(lo + window, len(ref))} | {a:.4f} | {b:.4f} | {100 * rel:+.2f}% |")
    ok = worst <= 0.01
    print(f"{'ok  ' if ok else 'FAIL'} curve: largest window difference {100 * worst:.2f}% (limit 1%)")
    return ok


def main(argv):
    if len(argv) >= 4 and argv[1] == "golden":
        return golden(argv[2], argv[3])
    if len(argv) >= 4 and argv[1] == "curve":
        return curve(argv[2], argv[3], int(argv[4]) if len(argv) > 4 else 40)
    print(__doc__, file=sys.stderr)
    return False


if __name__ == "__main__":
    sys.exit(0 if main(sys.argv) else 1)
