"""slimship inspect: what is inside a package."""

HELP = "show a package's manifest, parts and their bytes, accuracy and provenance"


def add_arguments(p) -> None:
    p.add_argument("package", help=".slim package")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--layers", action="store_true",
                   help="also show where the bytes go, one row per weight tensor (encoding, stored and compressed bytes)")


def run(args) -> int:
    import json

    from slimship.package.format import open_package
    from slimship.package.manifest import printable as t  # manifest text is untrusted: never print it raw
    from slimship.package.verify import verify

    verify(args.package)  # streamed: hashes, graph, manifest; then only the header is read again
    pkg = open_package(args.package)
    m = pkg.manifest
    info = {
        "path": args.package, "size_bytes": pkg.size_bytes, "format_version": pkg.format_version,
        "package_sha256": pkg.package_sha256, "slimship_version": m.get("slimship_version"), "created": m.get("created"),
        "model": {k: v for k, v in m.get("model", {}).items() if k != "arch_edits"},
        "structural_edits": len(m.get("model", {}).get("arch_edits", {}) or {}),
        "preprocessing": m.get("preprocessing"),
        "metrics": {k: m.get("metrics", {}).get(k) for k in ("name", "accuracy", "val_accuracy", "params", "nonzero_params", "macs", "latency_ms")},
        "parts": [{"name": p.name, "codec": p.codec, "stored_bytes": p.stored_size, "raw_bytes": p.raw_size, "sha256": p.sha256}
                  for p in pkg.parts.values()],
        "recipe": m.get("recipe", {}).get("name"),
        "delta": _delta_summary(m.get("delta")),
        "rebuilt_from": m.get("rebuilt_from"),
    }
    layers = _layers(args.package) if args.layers else None
    if layers is not None:
        from dataclasses import asdict

        info["layers"] = [asdict(r) for r in layers]
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{t(args.package)}: {pkg.size_bytes:,} bytes, format v{pkg.format_version}, sha256 {pkg.package_sha256[:16]}…")
    md = info["model"]
    print(f"  model: {t(md.get('architecture'))} · {t(md.get('num_classes'))} classes · runtime {t(md.get('runtime'))} · "
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
        full = f", the full package is {d['full_bytes']:,} bytes" if d.get("full_bytes") else ""
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
    if layers is not None:
        from slimship.package.layer_bytes import format_layer_table, part_bytes

        print(format_layer_table(layers, part_bytes(args.package)))
    return 0


def _layers(path):
    from slimship.core.errors import PackageError
    from slimship.package.layer_bytes import layer_bytes

    try:
        return layer_bytes(path)
    except PackageError as e:
        raise PackageError(f"{e} (--layers needs a package with its own deploy graph: pull a delta task whole, "
                           f"or inspect it without --layers)") from None


def _delta_summary(meta) -> dict | None:
    """The delta manifest entry without its bulky encoding details (None for a full package)."""
    if not isinstance(meta, dict):
        return None
    info = meta.get("info") if isinstance(meta.get("info"), dict) else {}
    return {"base_package_sha256": meta.get("base_package_sha256"), "base_graph_sha256": meta.get("base_graph_sha256"),
            "mode": meta.get("mode"), **{k: info.get(k) for k in ("preset", "value_bits", "density", "full_bytes", "check")}}
