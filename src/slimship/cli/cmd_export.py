"""slimship export: a package's deploy graph as plain ONNX, its weights as safetensors."""

HELP = "write a package's deploy graph as a .onnx file and/or its weights as a .safetensors file"


def add_arguments(p) -> None:
    p.add_argument("package", help=".slim package")
    p.add_argument("--base", metavar="BASE.slim",
                   help="for a task stored as a delta: its base package (default: the matching .slim next to it)")
    p.add_argument("--onnx", metavar="FILE", help="write the deploy graph (ONNX) here")
    p.add_argument("--safetensors", metavar="FILE",
                   help="write the graph's initializers (weights, int8 weights, scales, zero points) here")
    p.add_argument("--force", action="store_true", help="replace output files that already hold something else")


def run(args) -> int:
    from slimship.package.delta.package import full_package
    from slimship.package.export import export_package

    with full_package(args.package, args.base) as path:  # a delta package: its task rebuilt, in a temp folder
        r = export_package(path, onnx=args.onnx, safetensors=args.safetensors, force=args.force)
    if r.onnx:
        print(f"wrote {r.onnx}")
    if r.safetensors:
        print(f"wrote {r.safetensors} ({r.tensors} tensors, {r.tensor_bytes:,} bytes)")
    return 0
