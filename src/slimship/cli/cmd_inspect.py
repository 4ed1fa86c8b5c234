"""slimship inspect: what is inside a package."""

HELP = "show a package's manifest, parts and their bytes, accuracy and provenance"


def add_arguments(p) -> None:
    p.add_argument("package", help=".slim package")
    p.add_argument("--json", action="store_true", help="print JSON")


def run(args) -> int:
    import json

    from slimship.package.format import read_package

    pkg = read_package(args.package, verify=True)
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
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{args.package}: {pkg.size_bytes:,} bytes, format v{pkg.format_version}, sha256 {pkg.package_sha256[:16]}…")
    md = info["model"]
    print(f"  model: {md.get('architecture')} · {md.get('num_classes')} classes · runtime {md.get('runtime')} · "
          f"{info['structural_edits']} pruned layers")
    acc = info["metrics"].get("accuracy")
    if isinstance(acc, (int, float)):
        print(f"  measured: test accuracy {100 * acc:.2f} %, params {info['metrics'].get('params'):,}, MACs {info['metrics'].get('macs'):,}")
    print(f"  made by slimship {info['slimship_version']} on {info['created']} from recipe {info['recipe']!r}")
    for p in info["parts"]:
        print(f"  part {p['name']}: {p['stored_bytes']:,} bytes stored ({p['codec']}), {p['raw_bytes']:,} raw")
    return 0
