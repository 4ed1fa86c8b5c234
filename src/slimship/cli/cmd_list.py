"""slimship list: what data sources, model kinds and sources, transfer strategies, compression methods and
runtimes exist (each read from its registry)."""

HELP = "list data sources, model kinds and sources, transfer strategies, compression methods and runtimes"


def add_arguments(p) -> None:
    p.add_argument("--json", action="store_true", help="print JSON")


def run(args) -> int:
    import json

    from slimship.compress import METHODS
    from slimship.core.runtime import RUNTIMES
    from slimship.data import SOURCES
    from slimship.models.adapter import MODEL_KINDS
    from slimship.models.hf_text import installed_text_models
    from slimship.models.kinds import load_builtin_kinds
    from slimship.models.weights import WEIGHT_PACKAGES

    load_builtin_kinds()
    sections = {
        "data sources": [(e.name, e.help) for e in SOURCES.list()],
        "model kinds": [(e.name, e.help) for e in MODEL_KINDS.list()],
        "model sources": [("timm:<architecture>", "any timm architecture by name (random init or weights below)"),
                          ("<file>.safetensors", "local safetensors state_dict (native or foreign layout)"),
                          ("<file>.pth/.pt/.bin", "local torch state_dict, loaded tensors-only; pickles need trust_pickle")]
        + [(e.name, e.help) for e in WEIGHT_PACKAGES.list()]
        + [("<folder>", "Hugging Face text model folder (config.json, *.safetensors, tokenizer.json): "
                        "kind hf-text")]
        + [(name, "installed Hugging Face text model (kind hf-text)") for name in installed_text_models()],
        "transfer strategies": [
            ("probe", "frozen backbone; features computed once and cached; logistic-regression head"),
            ("finetune", "all layers; options: head_init probe (LP-FT), gradual_unfreeze, layer_decay"),
            ("partial", "freeze the first freeze_stages stages, fine-tune the rest"),
            ("lora", "PEFT LoRA adapters (transfer.lora) + the head, merged; ships as a low-rank delta on base.slim"),
            ("scratch", "baseline beside every run: same architecture, random init, same budget"),
        ],
        "compression methods": [(e.name, e.help) for e in METHODS.list()],
        "runtimes": [(e.name, e.help + ("" if e.obj.available() else " (not installed)")) for e in RUNTIMES.list()],
    }
    if args.json:
        print(json.dumps({k: [{"name": n, "help": h} for n, h in v] for k, v in sections.items()}, indent=2))
        return 0
    for title, rows in sections.items():
        print(f"{title}:")
        w = max(len(n) for n, _ in rows)
        for n, h in rows:
            print(f"  {n.ljust(w)}  {h}")
        print()
    return 0
