"""slimship inspect: what is inside a package."""

HELP = "show a package's manifest, parts and their bytes, accuracy and provenance"


def add_arguments(p) -> None:
    p.add_argument("package", help=".slim package")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--layers", action="store_true",
                   help="also show where the bytes go, one row per weight tensor (encoding, stored and compressed bytes)")


def run(args) -> int:
    import json

    from slimship.api.packages import inspect_package
    from slimship.package.manifest import printable as t  # manifest text is untrusted: never print it raw

    info = inspect_package(args.package, layers=args.layers)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{t(args.package)}: {info['size_bytes']:,} bytes, format v{info['format_version']}, "
          f"sha256 {info['package_sha256'][:16]}…")
    md = info["model"]
    table = md.get("runtime_by_batch") or {}
    runtime = (", ".join(f"{t(rt)} at batch {t(b)}" for b, rt in table.items())
               if len(set(table.values())) > 1 else t(md.get("runtime")))
    print(f"  model: {t(md.get('architecture'))} · {t(md.get('num_classes'))} classes · runtime {runtime} · "
          f"{info['structural_edits']} pruned layers")
    acc = info["metrics"].get("accuracy")
    if isinstance(acc, (int, float)):
        counts = "".join(f", {label} {info['metrics'][k]:,}" for k, label in (("params", "params"), ("macs", "MACs"))
                         if isinstance(info["metrics"].get(k), int))  # a hand-made package may record only accuracy
        print(f"  measured: test accuracy {100 * acc:.2f} %{counts}")
    print(f"  made by slimship {t(info['slimship_version'])} on {t(info['created'])} from recipe {t(repr(info['recipe']))}")
    for p in info["parts"]:
        print(f"  part {t(p['name'])}: {p['stored_bytes']:,} bytes stored ({p['codec']}), {p['raw_bytes']:,} raw")
    d = info["delta"]
    if d is not None:
        full = f", the full package is {d['full_bytes']:,} bytes" if isinstance(d.get("full_bytes"), int) else ""
        preset = f", {t(d['preset'])}" if d.get("preset") else ""
        print(f"  delta ({t(d.get('mode'))}{preset}) against base package "
              f"sha256 {t(str(d.get('base_package_sha256'))[:16])}…{full}; eval/predict/export take --base BASE.slim")
        c = d.get("check")
        if isinstance(c, dict):
            print(f"  checked at push on {t(c.get('inputs'))} random inputs: max |logit difference| "
                  f"{t(c.get('max_abs_logit_diff'))}, top-1 agreement {t(c.get('top1_agreement'))}")
    r = info["rebuilt_from"]
    if isinstance(r, dict):
        print(f"  rebuilt from base package id {t(str(r.get('base_package'))[:16])}… + delta package id "
              f"{t(str(r.get('delta_package'))[:16])}… (file SHA-256s, as a store names packages; {t(r.get('mode'))})")
    if "layers" in info:
        from slimship.package.layer_bytes import PartBytes, TensorBytes, format_layer_table

        rows = [TensorBytes(**{**t, "shape": tuple(t["shape"])}) for t in info["layers"]]
        parts = [PartBytes(p["name"], p["codec"], p["raw_bytes"], p["stored_bytes"]) for p in info["parts"]]
        print(format_layer_table(rows, parts))
    return 0
