"""Pure parsers for the Docker commands the probe runs (no I/O; tested on recorded real output).

Which command for which fact, and why (the formats were checked against docker/cli's formatter code and
recorded from docker 20.10 and 28.2 clients, see ``tests/data/probes/docker_real/NOTES.md``):

- ``docker ps --format '{{json .}}'`` is *not* used for details: it joins labels with commas (a value
  containing a comma cannot be split back), reduces mounts to names (truncated unless ``--no-trunc``),
  prints the creation time in Go's ``String()`` form, and — because the template touches ``.Size`` — makes
  the daemon compute every container's disk usage. We only take ids from ``docker ps -aq --no-trunc``.
- ``docker container inspect`` has the full data. It is run with :data:`CONTAINER_TEMPLATE`, which emits one
  JSON object per container with the fields we use and the environment reduced to *names* inside the Go
  template, so environment values (database passwords) never leave the server. :func:`parse_containers`
  also accepts the default full ``docker inspect`` array (recorded samples, other tools), dropping values.
- ``docker volume inspect`` gives labels as a map (``docker volume ls --format`` joins them with commas).
- ``docker system df -v --format '{{json .}}'`` is the only CLI output with per-volume sizes; they are
  human strings rounded to 4 significant digits (``1.235GB``, decimal units), ``N/A`` without usage data,
  and negative ("not available") for volumes of other drivers. The 20.10 client does not accept
  ``--format json``, hence ``{{json .}}``.
- ``du -s -b`` (GNU and BusyBox alike) gives exact apparent sizes when docker cannot.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

from bot.probes.base import ProbeError
from bot.probes.docker_models import Container, DockerVersion, Mount, Volume

# One line per container; optional keys go through `index` because inspect templates run on raw JSON maps
# with missingkey=error (a container without exposed ports has no "ExposedPorts" key at all).
CONTAINER_TEMPLATE = (
    '{"Id":{{json .Id}},"Name":{{json .Name}},"Created":{{json .Created}},'
    '"State":{{json .State.Status}},"ExitCode":{{json .State.ExitCode}},'
    '"StartedAt":{{json .State.StartedAt}},"FinishedAt":{{json .State.FinishedAt}},'
    '"Image":{{json .Config.Image}},"ImageId":{{json .Image}},'
    '"Labels":{{json (index .Config "Labels")}},"ExposedPorts":{{json (index .Config "ExposedPorts")}},'
    '"EnvNames":[{{range $i, $e := (index .Config "Env")}}{{if $i}},{{end}}'
    '{{json (index (split $e "=") 0)}}{{end}}],'
    '"Mounts":{{json (index . "Mounts")}}}'
)

_HEX_ID = re.compile(r"^[0-9a-f]{12,64}$")
_SIZE = re.compile(r"^\s*(-?[0-9]+(?:\.[0-9]+)?(?:e[+-]?[0-9]+)?)\s*([kKMGTPEZY]?)B\s*$")
_DECIMAL = {"": 1, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}
_DECIMAL |= {"Z": 10**21, "Y": 10**24}


def _garbage(what: str) -> ProbeError:
    # The output itself is never quoted: it may come from an unexpected program and contain anything.
    return ProbeError(
        f"`{what}` printed something that is not the JSON Docker prints; the `docker` command on this server "
        "may be a wrapper or an incompatible tool (podman without its docker emulation, an old client)."
    )


def parse_time(value: object) -> datetime | None:
    """Docker's RFC 3339 times (nanoseconds allowed); Go's zero time and anything unparsable are None."""
    if not isinstance(value, str) or not value or value.startswith("0001-01-01"):
        return None
    text = re.sub(r"(\.\d{6})\d+", r"\1", value.strip())
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _str_map(value: object) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): "" if v is None else str(v) for k, v in value.items()}


def parse_version(text: str) -> DockerVersion:
    """``docker version --format '{{json .}}'``. ``Server`` is null when the daemon did not answer.

    Docker spells the API field ``ApiVersion``; podman's docker emulation ``APIVersion`` — both accepted.
    """
    try:
        data = json.loads(text.strip().splitlines()[0]) if text.strip() else None
    except (json.JSONDecodeError, IndexError):
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("Client"), dict):
        raise _garbage("docker version")
    client, server = data["Client"], data.get("Server") or {}

    def api(part: Mapping[str, Any]) -> str:
        return str(part.get("ApiVersion") or part.get("APIVersion") or "")

    return DockerVersion(
        client_version=str(client.get("Version") or ""),
        client_api=api(client),
        server_version=str(server.get("Version") or ""),
        server_api=api(server),
        server_os=str(server.get("Os") or ""),
        server_arch=str(server.get("Arch") or ""),
    )


def parse_ids(text: str) -> tuple[str, ...]:
    """``docker ps -aq --no-trunc``: one hexadecimal id per line."""
    ids = tuple(line.strip() for line in text.splitlines() if line.strip())
    if any(not _HEX_ID.match(i) for i in ids):
        raise _garbage("docker ps")
    return ids


def parse_names(text: str) -> tuple[str, ...]:
    """``docker volume ls -q``: one name per line (names cannot contain newlines)."""
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def _json_records(text: str, what: str) -> Iterator[dict[str, Any]]:
    """Objects from a JSON array (default inspect output) or JSON lines (our templates)."""
    stripped = text.strip()
    if not stripped:
        return
    try:
        if stripped.startswith("["):
            records = json.loads(stripped)
        else:
            records = [json.loads(line) for line in stripped.splitlines() if line.strip()]
    except json.JSONDecodeError:
        raise _garbage(what) from None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise _garbage(what)
    yield from records


def _mount(raw: Mapping[str, Any]) -> Mount:
    return Mount(
        type=str(raw.get("Type") or ("volume" if raw.get("Name") else "bind")),
        name=str(raw.get("Name") or ""),
        source=str(raw.get("Source") or ""),
        destination=str(raw.get("Destination") or ""),
        rw=bool(raw.get("RW", True)),
        driver=str(raw.get("Driver") or ""),
    )


def _env_names(record: Mapping[str, Any]) -> tuple[str, ...]:
    """Names from our template's ``EnvNames``, or from a full inspect's ``Config.Env`` with values cut off."""
    if isinstance(record.get("EnvNames"), list):
        raw = record["EnvNames"]
    else:
        config = record.get("Config") or {}
        raw = [str(item).split("=", 1)[0] for item in config.get("Env") or []]
    return tuple(dict.fromkeys(str(n) for n in raw if n))


def _container(record: Mapping[str, Any]) -> Container:
    """One container from either our template's flat record or a full ``docker inspect`` object."""
    config = record.get("Config") if isinstance(record.get("Config"), dict) else {}
    state = record.get("State")
    state_map = state if isinstance(state, dict) else {"Status": state}
    full = "Config" in record  # full inspect: Image is the id, Config.Image the reference
    labels = record.get("Labels") if not full else config.get("Labels")
    ports = record.get("ExposedPorts") if not full else config.get("ExposedPorts")
    return Container(
        id=str(record.get("Id") or ""),
        name=str(record.get("Name") or "").lstrip("/"),
        image=str((config.get("Image") if full else record.get("Image")) or ""),
        image_id=str((record.get("Image") if full else record.get("ImageId")) or ""),
        state=str(state_map.get("Status") or "unknown"),
        exit_code=state_map.get("ExitCode", record.get("ExitCode")),
        created=parse_time(record.get("Created")),
        started_at=parse_time(state_map.get("StartedAt", record.get("StartedAt"))),
        finished_at=parse_time(state_map.get("FinishedAt", record.get("FinishedAt"))),
        labels=_str_map(labels),
        mounts=tuple(_mount(m) for m in record.get("Mounts") or [] if isinstance(m, dict)),
        ports=tuple(sorted(ports)) if isinstance(ports, Mapping) else (),
        env_names=_env_names(record),
    )


def parse_containers(text: str) -> tuple[Container, ...]:
    """``docker container inspect`` output, with :data:`CONTAINER_TEMPLATE` or the default JSON array."""
    containers = []
    for record in _json_records(text, "docker container inspect"):
        if not isinstance(record.get("Id"), str) or "Name" not in record:
            raise _garbage("docker container inspect")
        containers.append(_container(record))
    return tuple(containers)


def parse_volumes(text: str) -> tuple[Volume, ...]:
    """``docker volume inspect NAME…`` (a JSON array; ``Labels`` may be null). Sizes are filled in later."""
    volumes = []
    for record in _json_records(text, "docker volume inspect"):
        if not isinstance(record.get("Name"), str):
            raise _garbage("docker volume inspect")
        volumes.append(
            Volume(
                name=record["Name"],
                driver=str(record.get("Driver") or ""),
                mountpoint=str(record.get("Mountpoint") or ""),
                scope=str(record.get("Scope") or ""),
                labels=_str_map(record.get("Labels")),
                created=parse_time(record.get("CreatedAt")),
            )
        )
    return tuple(volumes)


def parse_human_size(text: str) -> int | None:
    """Docker's ``units.HumanSize`` (decimal: ``3kB``, ``1.235GB``) to bytes; ``N/A``/negative → None."""
    match = _SIZE.match(text or "")
    if not match:
        return None
    value = float(match.group(1)) * _DECIMAL[match.group(2)]
    return round(value) if value >= 0 else None


def parse_df_volume_sizes(text: str) -> dict[str, int | None]:
    """Volume name → bytes (rounded by docker) from ``docker system df -v --format '{{json .}}'``."""
    try:
        data = json.loads(text.strip()) if text.strip() else None
    except json.JSONDecodeError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("Volumes", []), list):
        raise _garbage("docker system df")
    sizes: dict[str, int | None] = {}
    for item in data.get("Volumes") or []:
        if isinstance(item, dict) and isinstance(item.get("Name"), str):
            sizes[item["Name"]] = parse_human_size(str(item.get("Size") or ""))
    return sizes


def parse_du(text: str) -> dict[str, int]:
    """``du -s -b PATH…``: ``<bytes><TAB><path>`` per path. Lines for paths du could not read are absent."""
    sizes: dict[str, int] = {}
    for line in text.splitlines():
        size, sep, path = line.partition("\t")
        if sep and size.strip().isdigit():
            sizes[path] = int(size)
    return sizes
