"""slimship export: a package's deploy graph as plain ONNX, its weights as safetensors, or a Triton model."""

HELP = "write a package's deploy graph as a .onnx file, its weights as .safetensors, and/or a Triton model repository"


def add_arguments(p) -> None:
    p.add_argument("package", help=".slim package")
    p.add_argument("--base", metavar="BASE.slim",
                   help="for a task stored as a delta: its base package (default: the matching .slim next to it)")
    p.add_argument("--onnx", metavar="FILE", help="write the deploy graph (ONNX) here")
    p.add_argument("--safetensors", metavar="FILE",
                   help="write the graph's initializers (weights, int8 weights, scales, zero points) here")
    p.add_argument("--triton", metavar="DIR",
                   help="add the model to the Triton model repository DIR: DIR/NAME/config.pbtxt, DIR/NAME/1/model.onnx")
    p.add_argument("--triton-name", metavar="NAME", help="Triton model name (default: the package file's name)")
    p.add_argument("--triton-max-batch", type=int, default=64, metavar="N",
                   help="largest batch Triton's dynamic batcher forms (default: 64)")
    p.add_argument("--triton-max-wait-us", type=int, default=2000, metavar="US",
                   help="longest a request waits for a batch, in microseconds (default: 2000)")
    p.add_argument("--triton-accelerator", choices=["auto", "none", "openvino"], default="auto",
                   help="ONNX Runtime's OpenVINO accelerator in Triton (auto: if the package records OpenVINO)")
    p.add_argument("--force", action="store_true", help="replace output files that already hold something else")


def run(args) -> int:
    from pathlib import Path

    from slimship.core.errors import SlimshipError
    from slimship.package.delta.package import full_package
    from slimship.package.export import export_package

    if not (args.onnx or args.safetensors or args.triton):
        raise SlimshipError("nothing to export: pass --onnx FILE, --safetensors FILE and/or --triton DIR")
    with full_package(args.package, args.base) as path:  # a delta package: its task rebuilt, in a temp folder
        r = (export_package(path, onnx=args.onnx, safetensors=args.safetensors, force=args.force)
             if args.onnx or args.safetensors else None)
        if args.triton:
            from slimship.package.triton import export_triton

            t = export_triton(path, args.triton, name=args.triton_name or Path(args.package).stem,
                              max_batch_size=args.triton_max_batch, max_queue_delay_us=args.triton_max_wait_us,
                              accelerator=args.triton_accelerator)
    if r is not None and r.onnx:
        print(f"wrote {r.onnx}")
    if r is not None and r.safetensors:
        print(f"wrote {r.safetensors} ({r.tensors} tensors, {r.tensor_bytes:,} bytes)")
    if args.triton:
        batching = f"max batch {t.max_batch_size}, dynamic batching" if t.max_batch_size else "no batching (fixed batch)"
        print(f"wrote Triton model {t.name!r} at {t.path} ({batching}; "
              f"{'OpenVINO accelerator' if t.accelerator else 'ONNX Runtime backend'}): see docs/deploy.md")
    return 0
