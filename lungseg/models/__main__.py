"""``python -m lungseg.models``: parameter counts and forward FLOPs of both networks (attention overhead)."""

from __future__ import annotations

import argparse

from lungseg.models import build_model, count_parameters, forward_flops


def main(argv: list[str] | None = None) -> None:
    """Print parameter counts and forward GFLOPs (batch 1) of the U-Net and the attention residual U-Net."""
    parser = argparse.ArgumentParser(prog="python -m lungseg.models", description=__doc__)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--base-channels", type=int, default=32)
    parser.add_argument("--depth", type=int, default=4)
    args = parser.parse_args(argv)
    rows = []
    for name in ("unet", "attention"):
        model = build_model(name, base_channels=args.base_channels, depth=args.depth)
        rows.append((name, count_parameters(model), forward_flops(model, args.image_size)))
    base_params, base_flops = rows[0][1], rows[0][2]
    print(f"image {args.image_size}x{args.image_size}, base_channels {args.base_channels}, depth {args.depth}")
    for name, params, flops in rows:
        print(f"{name:10s} params {params:>12,d} ({100 * (params / base_params - 1):+.1f} %)  "
              f"FLOPs {flops:>15,d} = {flops / 1e9:.2f} G ({100 * (flops / base_flops - 1):+.1f} %)")


if __name__ == "__main__":
    main()
