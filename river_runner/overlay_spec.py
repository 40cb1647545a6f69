"""Overlay subnet math and the assignment a host hands a runner (design §4).

Pure and shared: the host allocates with it, the runner configures its links from the
assignment it is sent, and clients may display it. No I/O here.

The overlay is described by `BASE/PREFIX/NODE_BITS/SUBNET_BITS` (default
`10.128.0.0/12/6/14`): the overlay network is BASE/PREFIX; runner *i* (1 .. 2**NODE_BITS - 1;
index 0 is kept for the host) owns the subnet BASE + (i << SUBNET_BITS) of prefix
PREFIX + NODE_BITS, and its VXLAN to the host has id `vxlan_base + i`.

Inside runner *i*'s subnet (e.g. 10.128.64.0/18 for i = 1 by default):

  .0            network
  first + 1     the host's address on this subnet: the overlay gateway (10.128.64.1)
  first + 2     the runner's bridge address: the workloads' default gateway (10.128.64.2)
  first + 3 ..  workload addresses, up to the one before broadcast (10.128.64.3 - 10.128.127.254)
"""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass
from typing import Any

DEFAULT_SPEC = "10.128.0.0/12/6/14"
DEFAULT_VXLAN_BASE = 100
DEFAULT_MTU = 1450  # 1500-byte underlay minus the 50 bytes of VXLAN/UDP/IP/Ethernet headers
VXLAN_PORT = 4789  # IANA
MAX_VXLAN_ID = 2**24 - 1
# Offsets inside a runner's subnet.
HOST_OFFSET = 1
RUNNER_OFFSET = 2
FIRST_WORKLOAD_OFFSET = 3


class OverlaySpecError(ValueError):
    """An overlay setting that cannot work; the message says what to change."""


def _int_part(name: str, text: str, spec: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise OverlaySpecError(
            f"overlay subnet {spec!r}: {name} must be a whole number, not {text!r}"
        ) from None


@dataclass(frozen=True)
class OverlaySpec:
    """A parsed `BASE/PREFIX/NODE_BITS/SUBNET_BITS`."""

    base: ipaddress.IPv4Address
    prefix: int
    node_bits: int
    subnet_bits: int

    @classmethod
    def parse(cls, text: str | None = None) -> OverlaySpec:
        """Parse and validate; raises OverlaySpecError with what to fix."""
        spec = (text or DEFAULT_SPEC).strip()
        parts = spec.split("/")
        if len(parts) != 4:
            raise OverlaySpecError(
                f"overlay subnet {spec!r} must look like BASE/PREFIX/NODE_BITS/SUBNET_BITS, "
                f"e.g. {DEFAULT_SPEC}"
            )
        try:
            base = ipaddress.IPv4Address(parts[0])
        except ipaddress.AddressValueError:
            raise OverlaySpecError(
                f"overlay subnet {spec!r}: {parts[0]!r} is not an IPv4 address"
            ) from None
        prefix = _int_part("PREFIX", parts[1], spec)
        node_bits = _int_part("NODE_BITS", parts[2], spec)
        subnet_bits = _int_part("SUBNET_BITS", parts[3], spec)
        total = prefix + node_bits + subnet_bits
        if total != 32:
            raise OverlaySpecError(
                f"overlay subnet {spec!r}: PREFIX + NODE_BITS + SUBNET_BITS must be 32 "
                f"({prefix} + {node_bits} + {subnet_bits} = {total})"
            )
        if not 1 <= prefix <= 29:
            raise OverlaySpecError(f"overlay subnet {spec!r}: PREFIX must be 1-29, not {prefix}")
        if node_bits < 1:
            raise OverlaySpecError(
                f"overlay subnet {spec!r}: NODE_BITS must be at least 1 (room for one runner)"
            )
        if subnet_bits < 3:
            raise OverlaySpecError(
                f"overlay subnet {spec!r}: SUBNET_BITS must be at least 3 (network, host, "
                "runner, broadcast and at least one workload per runner)"
            )
        network = ipaddress.IPv4Network(f"{base}/{prefix}", strict=False)
        if network.network_address != base:
            raise OverlaySpecError(
                f"overlay subnet {spec!r}: BASE {base} is not aligned to /{prefix}; "
                f"did you mean {network.network_address}/{prefix}/{node_bits}/{subnet_bits}?"
            )
        return cls(base, prefix, node_bits, subnet_bits)

    def __str__(self) -> str:
        return f"{self.base}/{self.prefix}/{self.node_bits}/{self.subnet_bits}"

    # ---- sizes ----------------------------------------------------------------------
    @property
    def network(self) -> ipaddress.IPv4Network:
        """The whole overlay, e.g. 10.128.0.0/12."""
        return ipaddress.IPv4Network(f"{self.base}/{self.prefix}")

    @property
    def subnet_prefix(self) -> int:
        """Prefix length of one runner's subnet, e.g. 18."""
        return self.prefix + self.node_bits

    @property
    def max_runners(self) -> int:
        """Runner indexes are 1 .. max_runners (index 0 is the host's own range)."""
        return 2**self.node_bits - 1

    @property
    def workloads_per_runner(self) -> int:
        return 2**self.subnet_bits - FIRST_WORKLOAD_OFFSET - 1

    # ---- one runner -----------------------------------------------------------------
    def check_index(self, index: int) -> int:
        if isinstance(index, bool) or not isinstance(index, int):
            raise OverlaySpecError(f"runner index must be a whole number, not {index!r}")
        if not 1 <= index <= self.max_runners:
            raise OverlaySpecError(
                f"runner index {index} is outside 1-{self.max_runners} for overlay {self}"
            )
        return index

    def subnet(self, index: int) -> ipaddress.IPv4Network:
        self.check_index(index)
        first = int(self.base) + (index << self.subnet_bits)
        return ipaddress.IPv4Network(f"{ipaddress.IPv4Address(first)}/{self.subnet_prefix}")

    def _at(self, index: int, offset: int) -> ipaddress.IPv4Address:
        return self.subnet(index).network_address + offset

    def host_ip(self, index: int) -> ipaddress.IPv4Address:
        """The host's address on runner `index`'s subnet: where overlay traffic is routed."""
        return self._at(index, HOST_OFFSET)

    def runner_ip(self, index: int) -> ipaddress.IPv4Address:
        """The runner's bridge address: the default gateway of its workloads."""
        return self._at(index, RUNNER_OFFSET)

    def workload_range(self, index: int) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
        """First and last address workloads on runner `index` may use (inclusive)."""
        subnet = self.subnet(index)
        return subnet.network_address + FIRST_WORKLOAD_OFFSET, subnet.broadcast_address - 1

    def index_of(self, address: str | ipaddress.IPv4Address) -> int | None:
        """The runner whose subnet holds `address` (None: outside every runner subnet)."""
        ip = ipaddress.IPv4Address(address)
        if ip not in self.network:
            return None
        index = (int(ip) - int(self.base)) >> self.subnet_bits
        return index if 1 <= index <= self.max_runners else None

    def is_workload_ip(self, index: int, address: str | ipaddress.IPv4Address) -> bool:
        first, last = self.workload_range(index)
        return first <= ipaddress.IPv4Address(address) <= last

    def assignment(
        self,
        index: int,
        *,
        vxlan_base: int = DEFAULT_VXLAN_BASE,
        host_underlay_ip: str,
        runner_underlay_ip: str,
        mtu: int = DEFAULT_MTU,
        port: int = VXLAN_PORT,
    ) -> OverlayAssignment:
        check_vxlan_base(vxlan_base, self)
        first, last = self.workload_range(index)
        return OverlayAssignment(
            index=index,
            vxlan_id=vxlan_base + index,
            network=str(self.network),
            subnet=str(self.subnet(index)),
            host_ip=str(self.host_ip(index)),
            runner_ip=str(self.runner_ip(index)),
            workload_first=str(first),
            workload_last=str(last),
            host_underlay_ip=host_underlay_ip,
            runner_underlay_ip=runner_underlay_ip,
            mtu=mtu,
            port=port,
        )


def gateway_mac(side: str, index: int) -> str:
    """The fixed MAC of an overlay bridge: `host` (the host's bridge for runner `index`) or
    `runner` (the runner's own bridge). Locally administered, derived from the index, so a
    bridge recreated after a restart or reboot answers at the MAC that neighbours (the other
    end of the tunnel, workloads) already have in their ARP caches: traffic resumes at once
    instead of after the caches expire."""
    role = {"host": 0, "runner": 1}[side]
    if not 0 <= index < 2**16:
        raise OverlaySpecError(f"runner index {index} does not fit a gateway MAC")
    return f"02:72:76:{role:02x}:{index >> 8:02x}:{index & 0xFF:02x}"


def check_vxlan_base(vxlan_base: int, spec: OverlaySpec) -> int:
    """VXLAN ids are 24 bits: base + every runner index must fit."""
    if isinstance(vxlan_base, bool) or not isinstance(vxlan_base, int) or vxlan_base < 0:
        raise OverlaySpecError(f"VXLAN id base must be a whole number >= 0, not {vxlan_base!r}")
    if vxlan_base + spec.max_runners > MAX_VXLAN_ID:
        raise OverlaySpecError(
            f"VXLAN id base {vxlan_base} + {spec.max_runners} runners exceeds the largest "
            f"VXLAN id {MAX_VXLAN_ID}"
        )
    return vxlan_base


def check_mtu(mtu: int) -> int:
    if isinstance(mtu, bool) or not isinstance(mtu, int) or not 576 <= mtu <= 9000:
        raise OverlaySpecError(f"overlay MTU must be 576-9000 bytes, not {mtu!r}")
    return mtu


def check_ipv4(address: str, what: str) -> str:
    """A unicast IPv4 address as text, or OverlaySpecError naming `what`."""
    try:
        ip = ipaddress.IPv4Address(str(address).strip())
    except ipaddress.AddressValueError:
        raise OverlaySpecError(f"{what} must be an IPv4 address, not {address!r}") from None
    if ip.is_multicast or ip.is_unspecified or ip == ipaddress.IPv4Address("255.255.255.255"):
        raise OverlaySpecError(f"{what} must be a unicast address, not {ip}")
    return str(ip)


@dataclass(frozen=True)
class OverlayAssignment:
    """What a runner needs to join the overlay: sent in the registration reply as `overlay`."""

    index: int
    vxlan_id: int
    network: str  # the whole overlay, routed through the host
    subnet: str  # this runner's subnet (CIDR)
    host_ip: str  # the host's address on this subnet
    runner_ip: str  # the runner bridge's address; workloads' gateway
    workload_first: str
    workload_last: str
    host_underlay_ip: str  # VXLAN remote, seen from the runner
    runner_underlay_ip: str  # VXLAN local
    mtu: int = DEFAULT_MTU
    port: int = VXLAN_PORT

    @property
    def prefixlen(self) -> int:
        return ipaddress.IPv4Network(self.subnet).prefixlen

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OverlayAssignment:
        """Validate a received assignment (it configures kernel links: trust nothing)."""
        try:
            fields = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
            assignment = cls(**fields)
            subnet = ipaddress.IPv4Network(assignment.subnet)
            network = ipaddress.IPv4Network(assignment.network)
            for name in ("host_ip", "runner_ip", "workload_first", "workload_last"):
                if ipaddress.IPv4Address(getattr(assignment, name)) not in subnet:
                    raise OverlaySpecError(f"{name} {getattr(assignment, name)} is not in {subnet}")
            if not subnet.subnet_of(network):
                raise OverlaySpecError(f"subnet {subnet} is not inside the overlay {network}")
            check_ipv4(assignment.host_underlay_ip, "host_underlay_ip")
            check_ipv4(assignment.runner_underlay_ip, "runner_underlay_ip")
            check_mtu(int(assignment.mtu))
            if not 0 < int(assignment.vxlan_id) <= MAX_VXLAN_ID:
                raise OverlaySpecError(f"vxlan_id {assignment.vxlan_id} is not a VXLAN id")
            if not 0 < int(assignment.port) < 65536:
                raise OverlaySpecError(f"port {assignment.port} is not a UDP port")
        except OverlaySpecError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise OverlaySpecError(f"malformed overlay assignment {data!r}: {exc}") from None
        return assignment
