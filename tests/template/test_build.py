"""`sam build` without Docker: every function fits Lambda's size limit and imports.

One build per session of this module (about a minute: it downloads the layer wheels). The
import test runs what the build produced under CPython 3.12 with nothing else on the path but
an AWS SDK after the layers, as the Lambda runtime has it, so a module the layers lack fails
here and not on the first cold start, and the SDK the core layer pins is the one loaded.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest
from cfnlint.decode import cfn_yaml

from m5flow_local.router.template import TEMPLATE_PATH, load_stack
from tests.template.test_template import SAMPLE_BUCKET, _tool

# Lambda's quota for a function's code plus all its layers, unzipped (250 MB = 250 MiB).
UNZIPPED_LIMIT = 250 * 2**20
# What the python3.12 runtime puts on the path itself (/var/runtime): the AWS SDK.
RUNTIME_PACKAGES = ("boto3", "botocore", "s3transfer", "jmespath", "urllib3", "dateutil", "six")
# Where load_stack resolves the functions' environment (names as in the sample events).
_PHYSICAL = {
    "DataBucket": SAMPLE_BUCKET,
    "DataBucket.Arn": f"arn:aws:s3:::{SAMPLE_BUCKET}",
    "SageMakerExecutionRole.Arn": "arn:aws:iam::123456789012:role/m5flow-test",
}


def _python312_environment() -> dict[str, str]:
    """The environment with `python3.12` on PATH, which `sam build` needs for python3.12.

    Taken as found on PATH, else from pyenv (PYENV_VERSION set to its newest 3.12).
    """
    env = {**os.environ, "SAM_CLI_TELEMETRY": "0"}
    if shutil.which("python3.12", path=env.get("PATH")) and _runs(["python3.12", "-V"], env):
        return env
    if shutil.which("pyenv"):
        versions = subprocess.run(
            ["pyenv", "versions", "--bare"], capture_output=True, text=True, check=False
        ).stdout.split()
        candidates = sorted(
            (v for v in versions if v.startswith("3.12.")),
            key=lambda v: tuple(int(part) for part in v.split(".") if part.isdigit()),
        )
        if candidates:
            env["PYENV_VERSION"] = candidates[-1]
            if _runs(["python3.12", "-V"], env):
                return env
    pytest.fail(
        "sam build needs python3.12 on PATH (the functions' runtime): install CPython 3.12 "
        "(e.g. `pyenv install 3.12`) and rerun `make test`"
    )


def _runs(command: list[str], env: dict[str, str]) -> bool:
    try:
        return subprocess.run(command, env=env, capture_output=True).returncode == 0
    except FileNotFoundError:
        return False


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """Run `sam build` into a temporary folder; return it and the environment it used."""
    root = tmp_path_factory.mktemp("sam")
    env = _python312_environment()
    result = subprocess.run(
        [
            _tool("sam"), "build",
            "--template", str(TEMPLATE_PATH),
            "--build-dir", str(root / "build"),
            # Off the repository's .aws-sam, which samconfig.toml's `cached = true` would use.
            "--cache-dir", str(root / "cache"),
            "--no-cached",
        ],
        cwd=TEMPLATE_PATH.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    return root / "build", env


def _built_functions(build_dir: Path) -> dict[str, tuple[Path, list[Path]]]:
    """Function -> (its code folder, its layers' folders), from the built template."""
    template = cfn_yaml.load(str(build_dir / "template.yaml"))
    resources = template["Resources"]
    functions = {}
    for logical_id, resource in resources.items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        props = resource["Properties"]
        layers = [
            build_dir / resources[layer["Ref"]]["Properties"]["ContentUri"]
            for layer in props.get("Layers", [])
        ]
        functions[logical_id] = (build_dir / props["CodeUri"], layers)
    return functions


def _size(folder: Path) -> int:
    return sum(path.lstat().st_size for path in folder.rglob("*") if path.is_file())


def test_every_function_with_its_layers_fits_in_250_mb(build):
    build_dir, _ = build
    functions = _built_functions(build_dir)
    assert set(functions) == set(load_stack(_PHYSICAL).functions)
    sizes = {
        name: _size(code) + sum(_size(layer) for layer in layers)
        for name, (code, layers) in functions.items()
    }
    table = "\n".join(f"{name:26} {size / 2**20:7.1f} MiB" for name, size in sizes.items())
    print(f"\nunzipped function + layers (limit {UNZIPPED_LIMIT / 2**20:.0f} MiB):\n{table}")
    assert max(sizes.values()) <= UNZIPPED_LIMIT, table


_SMOKE = textwrap.dedent(
    """
    import importlib, json, sys
    app = importlib.import_module("app")
    assert callable(app.lambda_handler)
    loaded = {name: getattr(sys.modules.get(name), "__file__", None)
              for name in ("m5flow", "pandas", "pyarrow", "numpy", "boto3", "botocore")}
    print(json.dumps(loaded))
    """
)


@pytest.fixture(scope="module")
def runtime_sdk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder standing in for /var/runtime: the AWS SDK only (pure Python packages)."""
    folder = tmp_path_factory.mktemp("runtime")
    for name in RUNTIME_PACKAGES:
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin is not None, name
        origin = Path(spec.origin)
        source = origin.parent if origin.name == "__init__.py" else origin
        (folder / source.name).symlink_to(source)
    return folder


def test_every_built_function_imports_under_python312(build, runtime_sdk):
    build_dir, env = build
    specs = load_stack(_PHYSICAL).functions
    processes = {}
    for name, (code, layers) in _built_functions(build_dir).items():
        path = [code, *(layer / "python" for layer in layers), runtime_sdk]
        function_env = {
            **env,
            **specs[name].environment,
            "PYTHONPATH": os.pathsep.join(str(p) for p in path),
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_LAMBDA_FUNCTION_NAME": name,
        }
        # -S: no site-packages, so nothing but the build and the SDK can satisfy an import;
        # -B: leave the build as measured.
        processes[name] = subprocess.Popen(
            ["python3.12", "-S", "-B", "-c", _SMOKE],
            cwd=code,
            env=function_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    for name, process in processes.items():
        out, err = process.communicate(timeout=180)
        assert process.returncode == 0, f"{name} does not import:\n{err[-3000:]}"
        loaded = json.loads(out.strip().splitlines()[-1])
        code, layers = _built_functions(build_dir)[name]
        assert loaded["m5flow"].startswith(str(layers[0])), (name, loaded)
        # The layer's SDK, not the runtime's: Lambda puts layers first on the path.
        assert loaded["boto3"].startswith(str(layers[0])), (name, loaded)
        assert loaded["botocore"].startswith(str(layers[0])), (name, loaded)
        if loaded["pandas"] is not None:
            assert loaded["pandas"].startswith(str(build_dir / "DataFrameLayer")), (name, loaded)
    # The steps that only start jobs or report run without the dataframe layer: the manifest
    # is plain JSON (m5flow.manifest), so their cold starts load no pandas or pyarrow.
    for name in ("StartTrainingFunction", "PublishModelFunction", "ReportFailureFunction"):
        assert [layer.name for layer in _built_functions(build_dir)[name][1]] == ["CoreLayer"]


@pytest.mark.parametrize(
    "requirements",
    ["layers/core/requirements.txt", "layers/dataframe/requirements.txt"],
)
def test_layers_pin_exactly_what_the_tests_run(requirements: str) -> None:
    """A layer ships pinned versions, and they are the versions installed here (make test)."""
    root = Path(__file__).resolve().parents[2]
    pins = [
        line.split("#")[0].strip()
        for line in (root / requirements).read_text().splitlines()
        if line.split("#")[0].strip()
    ]
    assert pins, f"{requirements} names no package"
    for pin in pins:
        name, _, version = pin.partition("==")
        assert version, f"{requirements}: {pin!r} is not pinned with =="
        installed = importlib.metadata.version(name)
        assert installed == version, (
            f"{requirements} pins {name}=={version} but the tests run {installed}: "
            "reinstall with `make install` (the Makefile passes the pins as constraints)"
        )
