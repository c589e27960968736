"""The entrypoint of an ``rlft submit`` job: a small shell script shipped with the job that runs
``rlft train`` under a Python that has rlft, whatever ``python`` the cluster's shell finds.

Ray runs a job's entrypoint through ``/bin/sh`` with the environment of the shell the head was
started from. A head started as ``.venv/bin/ray start --head`` from a shell where that virtual
environment was not active finds another ``python`` (or none): ``python -m launch.cli`` would fail
with ``No module named 'launch'``. The script takes ``python`` on the job's ``PATH`` when it has rlft
(a ``pip`` runtime env puts its virtualenv first there), else the Python that runs Ray itself on
that node (found from the job's supervisor process, the ancestor of the script that has Ray's
``_raylet.so`` loaded; only inside a Ray job, whose supervisor sets ``RAY_JOB_CONFIG_JSON_ENV_VAR``).
When neither has rlft it says so, with the fix, and exits 2.
"""

from __future__ import annotations

from pathlib import Path

LAUNCHER_REL = "_rlft_job/run.sh"
NO_RLFT = "rlft: the cluster's Python cannot run rlft"
"""The start of the job's last log line when no Python there has rlft (``rlft submit`` exits 2)."""

LAUNCHER = r"""#!/bin/sh
# rlft's job entrypoint (written by `rlft submit`): `python -u -m launch.cli "$@"` under a Python
# that has rlft: `python` on PATH when it has it, else the Python running Ray on this node.
has_rlft() {  # finds rlft's packages without importing them (torch and all)
    [ -n "$1" ] && "$1" -c 'import importlib.util as u, sys
sys.exit(not (u.find_spec("rlft") and u.find_spec("launch")))' 2>/dev/null
}
ray_python() {  # the interpreter of the job's supervisor: the nearest ancestor that has Ray loaded
    [ -n "$RAY_JOB_CONFIG_JSON_ENV_VAR" ] || return 1  # set by the supervisor (not in a Ray job)
    pid=$$
    for _ in 1 2 3 4; do
        pid=$(sed -n 's/^PPid:[[:space:]]*//p' "/proc/$pid/status" 2>/dev/null)
        [ -n "$pid" ] && [ "$pid" -gt 1 ] || return 1
        lib=$(grep -m 1 -o '/.*/ray/_raylet\.so$' "/proc/$pid/maps" 2>/dev/null) || continue
        site=${lib%/ray/_raylet.so}
        prefix=${site%/lib/python*}
        version=${site#"$prefix"/lib/}
        version=${version%%/*}
        for py in "$prefix/bin/$version" "$prefix/bin/python3" "$prefix/bin/python" "$(readlink "/proc/$pid/exe")"; do
            if [ -x "$py" ] && has_rlft "$py"; then
                echo "$py"
                return 0
            fi
        done
        echo "${prefix}/bin/${version}"
        return 1
    done
    return 1
}
for py in "$(command -v python)" "$(command -v python3)"; do
    if has_rlft "$py"; then
        exec "$py" -u -m launch.cli "$@"
    fi
done
if found=$(ray_python); then
    exec "$found" -u -m launch.cli "$@"
fi
echo "__NO_RLFT__: neither \`python\` on the job's PATH (\
$(command -v python || command -v python3 || echo none)) nor the Python that runs Ray on this node (\
${found:-not found}) can import rlft. Install rlft into the environment Ray is started from on every \
node (<that python> -m pip install rlft, then restart Ray), or ship it with the job: rlft submit \
--pip rlft (or --pip a wheel or directory the cluster can reach)" >&2
exit 2
""".replace("__NO_RLFT__", NO_RLFT)


def write_launcher(root: Path) -> Path:
    """Write the entrypoint script into a job's staged working directory ``root``; its path."""
    path = root / LAUNCHER_REL
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(LAUNCHER)
    path.chmod(0o755)
    return path
