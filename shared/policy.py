"""What a task may do: which programs a shell task may run, which hosts an http task may call.

Checked twice. At submit (Queue.prepare) so a person gets a 422 naming the field and nothing is
queued; and again in the worker right before it acts, because the worker is what acts: a task may
have waited in the queue while the configuration changed, or been written by something other than
the API. The worker's http check happens at connect time, on the address actually dialled, so a
host name that resolves (or re-resolves) to a denied address is caught, redirects included.

Settings: shell_allow, shell_workdir, http_allow_hosts, http_deny_hosts, http_max_redirects,
http_max_response_bytes (shared/settings.py). Reasons are in docs/security.md.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from shared.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Cloud metadata services (AWS, GCP, Azure, OpenStack: 169.254.169.254; AWS IPv6: fd00:ec2::254)
# hand out credentials to whoever asks from the machine. Denied unless explicitly allowed.
METADATA_NETWORKS: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("169.254.0.0/16"),
    ipaddress.ip_network("fe80::/10"),
    ipaddress.ip_network("fd00:ec2::254/128"),
)
# "Any address" is not a destination, but connecting to it reaches this machine: always denied,
# so a deny rule for 127.0.0.0/8 cannot be stepped around with http://0.0.0.0/.
UNSPECIFIED_NETWORKS: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("0.0.0.0/8"),
    ipaddress.ip_network("::/128"),
)

# With a shell allowlist, these variables would let a task run code of its choosing inside an
# allowed program (the dynamic loader, shell start-up files, interpreter hooks) or pick which
# program an allowed one runs next (PATH). Without an allowlist any program may run anyway.
_ENV_DENIED_NAMES = frozenset({
    "PATH", "BASH_ENV", "ENV", "IFS", "SHELLOPTS", "PS4", "GCONV_PATH", "PERL5LIB", "PERL5OPT",
    "PERLLIB", "NODE_OPTIONS", "RUBYOPT", "RUBYLIB", "JAVA_TOOL_OPTIONS", "LOCPATH",
})
_ENV_DENIED_PREFIXES = ("LD_", "DYLD_", "BASH_FUNC_", "PYTHON")


class PolicyError(ValueError):
    """A task the policy does not allow; the message names the field and the setting.

    Messages start with the field ("payload.url: ..."), which is also kept as `field`.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        head, colon, _ = message.partition(": ")
        self.field = head if colon and _FIELD_NAME.fullmatch(head) else None


_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")


def parse_address(text: str) -> IPAddress | None:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    # ::ffff:169.254.169.254 is the IPv4 address wearing an IPv6 coat; judge the IPv4 one.
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def normalize_host(host: str) -> str:
    return host.strip().lower().rstrip(".")


@dataclass(frozen=True)
class HostRule:
    """A list of hosts: exact names, `*.suffix` wildcards (subdomains only), IPs and CIDRs."""

    names: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> HostRule:
        names: set[str] = set()
        suffixes: list[str] = []
        networks: list[IPNetwork] = []
        for raw in entries:
            entry = normalize_host(raw)
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            if entry.startswith("*."):
                suffixes.append(entry[1:])  # "*.example.com" -> ".example.com"
            else:
                names.add(entry)
        return cls(frozenset(names), tuple(suffixes), tuple(networks))

    def __bool__(self) -> bool:
        return bool(self.names or self.suffixes or self.networks)

    def matches_name(self, host: str) -> bool:
        host = normalize_host(host)
        return host in self.names or any(host.endswith(s) for s in self.suffixes)

    def matches_ip(self, ip: IPAddress) -> bool:
        return any(ip.version == net.version and ip in net for net in self.networks)


# -- shell ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShellPolicy:
    allow: tuple[str, ...]  # program names or absolute paths; empty: any program
    workdir: str
    path: str  # the PATH programs are looked up on, and the one tasks get

    def resolve(self, command: str) -> str | None:
        """The absolute path `command` runs, or None when there is no such program.

        A bare name is looked up on PATH; a relative path is relative to the working directory.
        """
        if "/" not in command:
            found = shutil.which(command, path=self.path)
            return os.path.abspath(found) if found else None
        full = os.path.normpath(os.path.join(self.workdir, command))
        return full if os.path.isfile(full) and os.access(full, os.X_OK) else None

    def allowed_paths(self) -> set[str]:
        """The allowlist resolved now (programs can be installed or removed at any time)."""
        paths = set()
        for entry in self.allow:
            found = self.resolve(entry) if "/" not in entry else os.path.normpath(entry)
            if found:
                paths.add(_same_file_key(found))
        return paths

    def check(self, command: str, env: Mapping[str, str]) -> str | None:
        """Raise PolicyError if not allowed; return the program's absolute path if found.

        Without an allowlist a missing program is not an error here: the worker reports it (it
        may run in another container, with other programs installed).
        """
        resolved = self.resolve(command)
        if not self.allow:
            return resolved
        if resolved is None or _same_file_key(resolved) not in self.allowed_paths():
            where = f" (found at {resolved})" if resolved and resolved != command else ""
            raise PolicyError(
                f"payload.command: {command!r}{where} is not an allowed program; "
                f"allowed: {', '.join(self.allow)} (LOCALFLOW_SHELL_ALLOW)"
            )
        for name in env:
            upper = name.upper()
            if upper in _ENV_DENIED_NAMES or upper.startswith(_ENV_DENIED_PREFIXES):
                raise PolicyError(
                    f"payload.env: {name} may not be set while LOCALFLOW_SHELL_ALLOW restricts "
                    "programs: it could make an allowed program run something else"
                )
        return resolved


def _same_file_key(path: str) -> str:
    """/bin/echo and /usr/bin/echo are one program when /bin links to /usr/bin: resolve the
    directory. Not the file itself: a multi-call binary (busybox) behind both /bin/echo and
    /bin/rm is one file, and resolving it would let `rm` in on the strength of `echo`."""
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


# -- http ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class HttpPolicy:
    allow: HostRule  # empty: any host not denied
    deny: HostRule
    max_redirects: int
    max_response_bytes: int

    def check_url(self, url: str, field: str = "payload.url") -> None:
        """What can be judged without DNS: the scheme, host names, literal addresses."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise PolicyError(f"{field}: only http:// and https:// URLs may be called: {url!r}")
        if not parts.hostname:
            raise PolicyError(f"{field}: the URL has no host: {url!r}")
        try:
            parts.port  # noqa: B018 - raises for a port that is not a number in range
        except ValueError:
            raise PolicyError(f"{field}: the URL's port is not valid: {url!r}") from None
        if parts.username is not None or parts.password is not None:
            raise PolicyError(f"{field}: credentials in the URL are not allowed; use headers")
        spelling = host_spelling_problem(parts.hostname)
        if spelling:
            raise PolicyError(f"{field}: {spelling}")
        # httpx loads with the first http task checked, not in every process (~15 MB).
        import httpx

        try:
            httpx.URL(url)  # what the worker will parse; refuse here what it would refuse there
        except (httpx.InvalidURL, ValueError) as exc:
            raise PolicyError(f"{field}: not a URL the worker can call: {exc}") from None
        host = normalize_host(parts.hostname)
        ip = parse_address(host)
        if ip is not None:
            reason = self.address_denied(host, ip)
        elif self.deny.matches_name(host):
            reason = f"host {host} is denied (LOCALFLOW_HTTP_DENY_HOSTS)"
        elif self.allow and not self.allow.networks and not self.allow.matches_name(host):
            # Only names are allowed, and this is not one: no address can rescue it.
            reason = f"host {host} is not allowed (LOCALFLOW_HTTP_ALLOW_HOSTS)"
        else:
            reason = None
        if reason:
            raise PolicyError(f"{field}: {reason}")

    def address_denied(self, host: str, ip: IPAddress) -> str | None:
        """Why connecting to `ip` for `host` is denied, or None if it is allowed."""
        host = normalize_host(host)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        explicitly_allowed = self.allow.matches_name(host) or self.allow.matches_ip(ip)
        if any(ip.version == n.version and ip in n for n in UNSPECIFIED_NETWORKS):
            return f"{ip} is not a destination"
        if self.deny.matches_name(host) or self.deny.matches_ip(ip):
            return f"{host} ({ip}) is denied (LOCALFLOW_HTTP_DENY_HOSTS)"
        if self.allow and not explicitly_allowed:
            return f"{host} ({ip}) is not allowed (LOCALFLOW_HTTP_ALLOW_HOSTS)"
        if any(ip.version == n.version and ip in n for n in METADATA_NETWORKS) and not (
            explicitly_allowed
        ):
            return (
                f"{host} ({ip}) is a link-local / cloud metadata address, denied unless listed "
                "in LOCALFLOW_HTTP_ALLOW_HOSTS"
            )
        return None


_LAST_LABEL_NUMBER = re.compile(r"[0-9]+|0[xX][0-9a-fA-F]*")


def host_spelling_problem(host: str) -> str | None:
    """Why `host` (a URL's host, brackets removed) is spelled ambiguously, or None.

    `0177.0.0.1`, `0x7f.1`, `127.1` and `2130706433` all mean 127.0.0.1 to the C resolver
    (inet_aton) and to browsers, but are a host *name* or an error to others: the worker's
    HTTP library refuses some and would look others up in DNS. A host whose last label is a
    number is therefore an IPv4 address, and must be written the one unambiguous way: four
    decimal numbers without leading zeros. (The URL standard's "ends in a number" rule.)
    """
    if ":" in host:  # an IPv6 literal
        return None if parse_address(host) is not None else f"{host!r} is not an IPv6 address"
    labels = host.split(".")
    if labels[-1] == "" and len(labels) > 1:
        labels = labels[:-1]  # one trailing dot: the root
        if _LAST_LABEL_NUMBER.fullmatch(labels[-1]):
            return f"write the address {host!r} without the trailing dot"
    if _LAST_LABEL_NUMBER.fullmatch(labels[-1]):
        dotted = ".".join(labels)
        try:
            ipaddress.IPv4Address(dotted)
        except ValueError:
            return (f"{host!r} is not an IPv4 address written the one unambiguous way: four "
                    "decimal numbers from 0 to 255 without leading zeros, e.g. 127.0.0.1 "
                    "(octal, hex, short and integer forms are read differently by different "
                    "programs)")
        return None
    if any(not label for label in labels):
        return f"the host {host!r} has an empty label"
    for ch in host:
        if not (ch.isalnum() or ch in "-_."):
            return f"the host {host!r} has a character {ch!r} that no host name has"
    return None


# -- both ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    shell: ShellPolicy
    http: HttpPolicy

    @classmethod
    def from_settings(cls, settings: Settings, path: str | None = None) -> Policy:
        return cls(
            shell=ShellPolicy(
                allow=tuple(settings.shell_allow),
                workdir=settings.shell_workdir or tempfile.gettempdir(),
                path=path if path is not None else default_path(),
            ),
            http=HttpPolicy(
                allow=HostRule.parse(settings.http_allow_hosts),
                deny=HostRule.parse(settings.http_deny_hosts),
                max_redirects=settings.http_max_redirects,
                max_response_bytes=settings.http_max_response_bytes,
            ),
        )

    def check(self, task_type: str, payload: Any) -> None:
        """The submit-time check of a validated payload (ShellPayload, HttpPayload)."""
        # Without an allowlist there is nothing to check a program against; looking it up on
        # PATH here would only cost time (the worker reports a missing program).
        if task_type == "shell" and self.shell.allow:
            self.shell.check(payload.command, payload.env)
        elif task_type == "http":
            self.http.check_url(payload.url)


def default_path() -> str:
    return os.environ.get("PATH") or "/usr/local/bin:/usr/bin:/bin"
