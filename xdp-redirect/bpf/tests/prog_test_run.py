#!/usr/bin/env python3
"""Verdict tests for steer.o through BPF_PROG_TEST_RUN (bpftool prog run), as root.

Runs in a private mount namespace with its own bpffs on /sys/fs/bpf (it re-executes itself
under `unshare --mount`): every map is LIBBPF_PIN_BY_NAME, which libbpf pins as
/sys/fs/bpf/NAME and bpftool cannot redirect, so on the host bpffs the test would reuse (or
leave) pins of those names. The program is pinned under /sys/fs/bpf/sl-test-PID, the maps as
/sys/fs/bpf/NAME of the private bpffs, which goes away, pins and all, when the test exits.
Creates a throwaway netns with three veth pairs so that ingress ifindexes exist, fills the maps
with bpftool, runs crafted frames and checks: return code, the counter slot that moved, the
output frame (MAC rewrite, VLAN strip), verdict events read from the ring buffer (mmap), and
that the counter slots sum to the frames run. Removes the netns and pins on exit.

Flow cache (flowcache.h): every map write is followed by a config write with the generation
bumped, as the loader does, and every frame runs on CPU 0, so a flow's later frames meet the
verdict its first one cached; the "fc" cases check hits against misses, generation bumps,
sockets appearing for cached flows, conntrack and the revalidation interval.

    python3 xdp-redirect/bpf/tests/prog_test_run.py [path/to/steer.o]
"""
import ctypes, json, mmap, os, struct, subprocess, sys, tempfile, atexit, ipaddress

if os.environ.get("SL_TEST_PRIVATE_BPFFS") != "1":
    os.environ["SL_TEST_PRIVATE_BPFFS"] = "1"
    os.execvp("unshare", ["unshare", "--mount", "--propagation", "private", sys.executable, *sys.argv])

OBJ = sys.argv[1] if len(sys.argv) > 1 else "/tmp/steer.o"
PID = os.getpid()
NS = f"sl-xdptest-{PID}"
PIN = f"/sys/fs/bpf/sl-test-{PID}"
MAPS = "/sys/fs/bpf"  # LIBBPF_PIN_BY_NAME: the private bpffs' root
XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = range(5)

CNT = dict(TO_SOCKET=0, KERNEL_REDIRECT=1, KERNEL_PASS=2, NOT_MANAGED=3, NON_IP=4, FAIL_OPEN=5,
           FRAGMENT_FOLLOWED=6, EVENTS_LOST=7, REDIRECT_FAILED=8, CT_REPLY=9)
DROP = dict(POLICY_DENIED=1, POLICY_DENY_RULE=2, MALFORMED=5, SPOOFED_SOURCE=6,
            FRAGMENT_WITHOUT_STATE=7, IDENTITY_COLLISION=8)
CNT_DROP_BASE = 16


def sh(*args, check=True):
    r = subprocess.run(args, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


def cleanup():
    subprocess.run(["ip", "netns", "del", NS], capture_output=True)
    subprocess.run(["rm", "-rf", PIN], capture_output=True)


atexit.register(cleanup)

# ---------------------------------------------------------------- setup
sh("mount", "-t", "bpf", "bpf", "/sys/fs/bpf")  # private: this mount namespace only
sh("ip", "netns", "add", NS)
IF = {}
for name in ("ha", "hb", "hu"):
    sh("ip", "-n", NS, "link", "add", f"{name}{PID % 10000}", "type", "veth", "peer", "name", f"p{name}{PID % 10000}")
links = json.loads(sh("ip", "-n", NS, "-j", "link", "show"))
for name in ("ha", "hb", "hu"):
    IF[name] = next(l["ifindex"] for l in links if l["ifname"] == f"{name}{PID % 10000}")

os.makedirs(PIN)
sh("bpftool", "prog", "loadall", OBJ, f"{PIN}/prog", "type", "xdp")
PROG_ID = json.loads(sh("bpftool", "-j", "prog", "show", "pinned", f"{PIN}/prog/sluice_steer"))["id"]


def hexb(b):
    return [f"{x:02x}" for x in b]


def map_id(name):
    return str(json.loads(sh("bpftool", "-j", "map", "show", "pinned", f"{MAPS}/{name}"))["id"])


# The config the test last wrote, and its generation: like the loader, every map write below is
# followed by a config write with the generation bumped, so that no cached verdict (flowcache.h)
# outlives the state it was decided on. bump=False leaves the generation alone (flow cache cases).
CONFIG = dict(flags=0, events_per_sec=0)
GENERATION = 0


def write_config():
    global GENERATION
    GENERATION += 1
    sh("ip", "netns", "exec", NS, "bpftool", "map", "update", "id", map_id("config"), "key", "hex",
       *hexb(struct.pack("<I", 0)), "value", "hex",
       *hexb(struct.pack("<IIQ", CONFIG["flags"], CONFIG["events_per_sec"], GENERATION)))


def map_update(name, key, value, bump=True):
    # Inside the netns: a devmap resolves its ifindex values in the updater's network namespace.
    sh("ip", "netns", "exec", NS, "bpftool", "map", "update", "id", map_id(name), "key", "hex", *hexb(key),
       "value", "hex", *hexb(value))
    if bump:
        write_config()


def map_delete(name, key, bump=True):
    sh("ip", "netns", "exec", NS, "bpftool", "map", "delete", "id", map_id(name), "key", "hex", *hexb(key))
    if bump:
        write_config()


def map_lookup(name, key):
    """The value's bytes, or None when the key is absent."""
    r = subprocess.run(["bpftool", "-j", "map", "lookup", "id", map_id(name), "key", "hex", *hexb(key)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        return None
    return bytes(int(x, 16) for x in json.loads(r.stdout)["value"])


def ip4(s):
    return ipaddress.IPv4Address(s).packed


def ip6(s):
    return ipaddress.IPv6Address(s).packed


def ipcache(addr_cidr, identity, ifindex=0, trie=None):
    net = ipaddress.ip_network(addr_cidr)
    trie = trie or ("ipcache_v4" if net.version == 4 else "ipcache_v6")
    map_update(trie, struct.pack("<I", net.prefixlen) + net.network_address.packed,
               struct.pack("<QII", identity, ifindex, 0))


MAC = {"a_pod": bytes.fromhex("02aa00000001"), "a_host": bytes.fromhex("02aa000000ff"),
       "b_pod": bytes.fromhex("02bb00000001"), "b_host": bytes.fromhex("02bb000000ff")}


def devmap_val(ifindex):
    # struct bpf_devmap_val: the target ifindex, then a program fd (0: no program).
    return struct.pack("<Ii", ifindex, 0)


def endpoint(ifindex, identity, pod_mac, host_mac, flags=0):
    map_update("endpoints", struct.pack("<I", ifindex),
               struct.pack("<QI6s6sII", identity, ifindex, pod_mac, host_mac, flags, 0))
    map_update("redirect_devmap", struct.pack("<I", ifindex), devmap_val(ifindex))


def local_policy(identity, ingress=0, egress=0, collided=0, ingress_rule=0, egress_rule=0):
    map_update("local_policy", struct.pack("<Q", identity),
               struct.pack("<BBBBIII", ingress, egress, collided, 0, ingress_rule, egress_rule, 0))


PROTO = {"icmp": 1, "tcp": 6, "udp": 17, "icmp6": 58, "sctp": 132}
INGRESS, EGRESS = 0, 1
ALLOW, DENY = 1, 2


def policy_key(local, remote, direction, proto=None, port=None, port_bits=16):
    if proto is None:
        prefix, proto_n, port_be = 136, 0, 0
    elif port is None:
        prefix, proto_n, port_be = 144, PROTO[proto], 0
    else:
        prefix, proto_n, port_be = 144 + port_bits, PROTO[proto], port
    return struct.pack("<IQQBB", prefix, local, remote, direction, proto_n) + struct.pack(">H", port_be)


def policy(local, remote, direction, action, rule, proto=None, port=None, port_bits=16):
    map_update("policy", policy_key(local, remote, direction, proto, port, port_bits),
               struct.pack("<BBHI", action, 0, 0, rule))


def config(flags=0, events_per_sec=100000):
    CONFIG.update(flags=flags, events_per_sec=events_per_sec)
    write_config()


CFG_FAIL_OPEN, CFG_ALLOW_FROM_HOST, CFG_CIDR_SELECTS_PODS, CFG_EVENTS_ALLOWED = 1, 2, 4, 8

# ---------------------------------------------------------------- frames
ETH_DST, ETH_SRC = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")


def eth(ethertype, vlan=None):
    if vlan is None:
        return ETH_DST + ETH_SRC + struct.pack(">H", ethertype)
    return ETH_DST + ETH_SRC + struct.pack(">HHH", 0x8100, vlan, ethertype)


def l4(proto, sport, dport, payload=b"x" * 8):
    if proto == "tcp":
        return struct.pack(">HHIIBBHHH", sport, dport, 0, 0, 0x50, 0x02, 1024, 0, 0) + payload
    if proto == "udp":
        return struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload
    if proto == "sctp":
        return struct.pack(">HHII", sport, dport, 0, 0) + payload
    if proto in ("icmp", "icmp6"):
        return struct.pack(">BBHHH", dport, 0, 0, 1, 1) + payload  # dport = type
    return payload


def echo(icmp_type, ident, seq=1, payload=b"x" * 8):
    """An ICMP/ICMPv6 header with an echo identifier (pass as body=, with proto icmp/icmp6)."""
    return struct.pack(">BBHHH", icmp_type, 0, 0, ident, seq) + payload


def v4(src, dst, proto="tcp", sport=1234, dport=80, vlan=None, ident=7, flags_off=0, body=None, ihl=5,
       total_delta=0, proto_n=None):
    body = l4(proto, sport, dport) if body is None else body
    opts = b"\x01" * ((ihl - 5) * 4) if ihl > 5 else b""
    total = 20 + len(opts) + len(body) + total_delta
    hdr = struct.pack(">BBHHHBBH4s4s", 0x40 | (ihl & 0xf), 0, total, ident, flags_off, 64,
                      proto_n if proto_n is not None else PROTO.get(proto, 0), 0, ip4(src), ip4(dst))
    return eth(0x0800, vlan) + hdr + opts + body


def v6(src, dst, proto="tcp", sport=1234, dport=80, ext=(), body=None, vlan=None, plen_delta=0):
    """ext: list of (kind, bytes-without-next-header) where kind in hop, dst, rt, frag, ah."""
    body = l4(proto, sport, dport) if body is None else body
    codes = {"hop": 0, "rt": 43, "frag": 44, "dst": 60, "ah": 51}
    chain = b""
    nh_list = [codes[k] for k, _ in ext] + [PROTO.get(proto, codes.get(proto, 59))]
    for i, (kind, data) in enumerate(ext):
        chain += bytes([nh_list[i + 1]]) + data
    first = nh_list[0]
    payload = chain + body
    hdr = struct.pack(">IHBB16s16s", 0x60000000, len(payload) + plen_delta, first, 64, ip6(src), ip6(dst))
    return eth(0x86DD, vlan) + hdr + payload


def opt8():  # an 8-byte hop-by-hop / dest-opts header (after its next-header byte)
    return bytes([0]) + b"\x01\x04\x00\x00\x00\x00"


def frag6(offset, more, ident):
    return bytes([0]) + struct.pack(">HI", (offset << 3) | (1 if more else 0), ident)


# ---------------------------------------------------------------- ring buffer
libc = ctypes.CDLL(None, use_errno=True)


def obj_get(path):
    p = ctypes.create_string_buffer(path.encode())
    attr = struct.pack("<QII", ctypes.addressof(p), 0, 0) + b"\0" * 112
    buf = ctypes.create_string_buffer(attr, len(attr))
    fd = libc.syscall(321, 7, buf, len(attr))  # bpf(BPF_OBJ_GET)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "BPF_OBJ_GET")
    return fd


RB_SIZE = 1 << 20
PAGE = mmap.PAGESIZE
rb_fd = obj_get(f"{MAPS}/events")
rb_cons = mmap.mmap(rb_fd, PAGE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
rb_prod = mmap.mmap(rb_fd, PAGE + 2 * RB_SIZE, mmap.MAP_SHARED, mmap.PROT_READ, offset=PAGE)


def read_events():
    out = []
    cons = struct.unpack_from("<Q", rb_cons, 0)[0]
    prod = struct.unpack_from("<Q", rb_prod, 0)[0]
    while cons < prod:
        base = PAGE + (cons & (RB_SIZE - 1))
        length, _pgoff = struct.unpack_from("<II", rb_prod, base)
        busy, discard = length & (1 << 31), length & (1 << 30)
        if busy:
            break
        length &= ~(3 << 30)
        if not discard:
            out.append(rb_prod[base + 8: base + 8 + length])
        cons += (8 + length + 7) & ~7
    struct.pack_into("<Q", rb_cons, 0, cons)
    return out


def parse_event(b):
    (ts, sid, did, sip, dip, sport, dport, proto, fam, action, reason, rule, ifindex, direction,
     _pad) = struct.unpack("<QQQ16s16sHHBBBBIIII", b)
    return dict(src_identity=sid, dst_identity=did, src_ip=sip, dst_ip=dip, sport=sport, dport=dport,
                protocol=proto, family=fam, action=action, reason=reason, rule=rule, ifindex=ifindex,
                direction=direction)


# ---------------------------------------------------------------- runner
def counters():
    data = json.loads(sh("bpftool", "-j", "map", "dump", "pinned", f"{MAPS}/counters"))
    out = [0] * 32
    for entry in data:
        key = entry["formatted"]["key"] if "formatted" in entry else int.from_bytes(bytes(int(x, 16) for x in entry["key"]), "little")
        total = 0
        for cpu in (entry["formatted"]["values"] if "formatted" in entry else entry["values"]):
            total += cpu["value"]["packets"]
        out[key] = total
    return out


RUNS = 0
FAILS = []


def run(frame, ifindex, repeat=1):
    global RUNS
    with tempfile.TemporaryDirectory() as d:
        fin, fout, cin = f"{d}/in", f"{d}/out", f"{d}/ctx"
        open(fin, "wb").write(frame)
        open(cin, "wb").write(struct.pack("<IIIIII", 0, len(frame), 0, ifindex, 0, 0))
        # On CPU 0 every time: the flow cache is per CPU, so a flow's later packets meet the
        # verdict its first one cached (and the cache cases below can count on it).
        out = sh("ip", "netns", "exec", NS, "taskset", "-c", "0", "bpftool", "-j", "prog", "run", "id",
                 str(PROG_ID), "data_in", fin, "data_out", fout, "ctx_in", cin, "repeat", str(repeat))
        RUNS += repeat
        return json.loads(out)["retval"], open(fout, "rb").read()


def check(name, frame, ifindex, want_ret, want_slot, want_frame=None, want_event=None):
    before = counters()
    read_events()
    ret, out = run(frame, ifindex)
    after = counters()
    moved = [i for i in range(32) if after[i] != before[i] and i != CNT["EVENTS_LOST"]]
    slot = want_slot if isinstance(want_slot, int) else (CNT[want_slot] if want_slot in CNT else CNT_DROP_BASE + DROP[want_slot])
    problems = []
    if ret != want_ret:
        problems.append(f"retval {ret} != {want_ret}")
    if moved != [slot]:
        problems.append(f"slots moved {moved} != [{slot}]")
    if want_frame is not None and out != want_frame:
        problems.append(f"frame out {out.hex()} != {want_frame.hex()}")
    evs = [parse_event(e) for e in read_events()]
    if want_event is not None:
        if want_event is False:
            if evs:
                problems.append(f"unexpected events {evs}")
        elif len(evs) != 1:
            problems.append(f"{len(evs)} events, wanted 1")
        else:
            for k, v in want_event.items():
                if evs[0][k] != v:
                    problems.append(f"event {k}={evs[0][k]} != {v}")
    print(("ok   " if not problems else "FAIL ") + name + ("" if not problems else ": " + "; ".join(problems)))
    if problems:
        FAILS.append(name)
    return out


# ---------------------------------------------------------------- state
ID_A, ID_B, ID_C, ID_CIDR_POD, ID_CIDR_EXT, ID_HOST = 1000, 2000, 3000, 6000, 5000, 1
HA, HB, HU = IF["ha"], IF["hb"], IF["hu"]
A4, B4, C4, HOST4 = "10.0.0.1", "10.0.0.2", "10.1.0.9", "192.168.0.1"
A6, B6 = "fd00::1", "fd00::2"

endpoint(HA, ID_A, MAC["a_pod"], MAC["a_host"])
endpoint(HB, ID_B, MAC["b_pod"], MAC["b_host"])
ipcache(f"{A4}/32", ID_A, HA)
ipcache(f"{B4}/32", ID_B, HB)
ipcache(f"{A6}/128", ID_A, HA)
ipcache(f"{B6}/128", ID_B, HB)
ipcache("10.1.0.0/24", ID_C)
ipcache(f"{HOST4}/32", ID_HOST)
ipcache("8.8.0.0/16", ID_CIDR_EXT, trie="cidr_v4")
ipcache("10.0.0.0/24", ID_CIDR_POD, trie="cidr_v4")
config(0)

local_policy(ID_B, ingress=1, ingress_rule=77)
policy(ID_B, ID_A, INGRESS, ALLOW, 11, "tcp", 80)
policy(ID_B, 0, INGRESS, DENY, 12, "udp")            # any peer, every UDP port
policy(ID_B, ID_A, INGRESS, ALLOW, 14, "icmp", 8)    # echo request
policy(ID_B, ID_A, INGRESS, ALLOW, 15, "tcp", 8000, port_bits=8)  # 8000-8191? no: prefix of 0x1f40
policy(ID_B, ID_CIDR_POD, INGRESS | 2, ALLOW, 13, "tcp", 9090)  # DIR_CIDR_ONLY: a CIDR peer's entry
policy(ID_B, ID_HOST, INGRESS, ALLOW, 16, "tcp", 7000)

B_MACS = MAC["b_pod"] + MAC["b_host"]

# ---------------------------------------------------------------- cases
print(f"netns {NS}, ifindex ha={HA} hb={HB} hu={HU}, prog id {PROG_ID}")
f = v4(A4, B4, "tcp", 1234, 80)
check("v4 A->B tcp/80 allowed, redirected with MAC rewrite", f, HA, XDP_REDIRECT, "KERNEL_REDIRECT",
      want_frame=B_MACS + f[12:], want_event=False)
check("v4 A->B tcp/81 default deny", v4(A4, B4, "tcp", 1234, 81), HA, XDP_DROP, "POLICY_DENIED",
      want_event=dict(action=DENY, reason=1, rule=77, direction=INGRESS, src_identity=ID_A, dst_identity=ID_B,
                      dport=81, sport=1234, protocol=6, family=4, ifindex=HA))
check("v4 A->B udp/53 deny rule (any peer)", v4(A4, B4, "udp", 5353, 53), HA, XDP_DROP, "POLICY_DENY_RULE",
      want_event=dict(reason=2, rule=12, direction=INGRESS))
check("v4 A->B icmp echo allowed", v4(A4, B4, "icmp", 0, 8), HA, XDP_REDIRECT, "KERNEL_REDIRECT")
check("v4 A->B icmp type 13 denied", v4(A4, B4, "icmp", 0, 13), HA, XDP_DROP, "POLICY_DENIED",
      want_event=dict(dport=13, sport=0, protocol=1))
check("v4 A->B tcp/8100 allowed by port prefix (8000/8)", v4(A4, B4, "tcp", 1, 8100), HA, XDP_REDIRECT, "KERNEL_REDIRECT")
check("v4 spoofed source on A's veth", v4(B4, B4, "tcp", 1, 80), HA, XDP_DROP, "SPOOFED_SOURCE",
      want_event=dict(reason=6, direction=EGRESS, src_identity=ID_A))
check("v4 unknown source on A's veth", v4("10.9.9.9", B4, "tcp", 1, 80), HA, XDP_DROP, "SPOOFED_SOURCE")
arp = eth(0x0806) + bytes(28)
check("ARP passed", arp, HA, XDP_PASS, "NON_IP", want_frame=arp, want_event=False)
# (test_run refuses frames shorter than an Ethernet header, so the runt case is a cut tag.)
check("VLAN tag cut short passed", ETH_DST + ETH_SRC + b"\x81\x00\x00", HA, XDP_PASS, "NON_IP")
check("double VLAN tag passed as non-IP", ETH_DST + ETH_SRC + struct.pack(">HHHH", 0x88a8, 1, 0x8100, 2) + b"\0" * 40,
      HA, XDP_PASS, "NON_IP")
check("uplink, not pod traffic", v4(C4, "8.8.8.8", "udp", 1, 53), HU, XDP_PASS, "NOT_MANAGED")
check("malformed IHL on A's veth", v4(A4, B4, ihl=4), HA, XDP_DROP, "MALFORMED", want_event=dict(reason=5))
check("malformed IHL on uplink passed", v4(A4, B4, ihl=4), HU, XDP_PASS, "NOT_MANAGED")
check("v4 total length past frame", v4(A4, B4, total_delta=10), HA, XDP_DROP, "MALFORMED")
check("v4 total length < header", v4(A4, B4, total_delta=-(len(l4("tcp", 1234, 80)) + 1)), HA, XDP_DROP, "MALFORMED")
check("v4 options, allowed", v4(A4, B4, "tcp", 1, 80, ihl=7), HA, XDP_REDIRECT, "KERNEL_REDIRECT")
check("v4 truncated TCP header", v4(A4, B4, body=b"\0" * 10, proto="tcp"), HA, XDP_DROP, "MALFORMED")
check("v4 truncated UDP header", v4(A4, B4, body=b"\0" * 6, proto="udp"), HA, XDP_DROP, "MALFORMED")
check("v4 other protocol (GRE), no ports, default deny", v4(A4, B4, body=b"\0" * 4, proto="gre", proto_n=47), HA,
      XDP_DROP, "POLICY_DENIED", want_event=dict(protocol=47, dport=0))
check("v4 VLAN-tagged A->B, tag stripped on redirect", v4(A4, B4, "tcp", 1, 80, vlan=5), HA, XDP_REDIRECT,
      "KERNEL_REDIRECT", want_frame=B_MACS + v4(A4, B4, "tcp", 1, 80)[12:])
check("v4 VLAN-tagged denied", v4(A4, B4, "tcp", 1, 81, vlan=5), HA, XDP_DROP, "POLICY_DENIED")

# world / host
check("world -> B on uplink, default deny", v4("9.9.9.9", B4, "tcp", 1, 80), HU, XDP_DROP, "POLICY_DENIED",
      want_event=dict(src_identity=9, direction=INGRESS, ifindex=HU))
check("host -> B tcp/22 without allow-from-host", v4(HOST4, B4, "tcp", 1, 22), HU, XDP_DROP, "POLICY_DENIED")
check("host -> B tcp/7000 allowed by a rule for host", v4(HOST4, B4, "tcp", 1, 7000), HU, XDP_REDIRECT, "KERNEL_REDIRECT")
config(CFG_ALLOW_FROM_HOST)
check("host -> B tcp/22 with allow-from-host", v4(HOST4, B4, "tcp", 1, 22), HU, XDP_REDIRECT, "KERNEL_REDIRECT")
check("host -> B udp/53: deny rule beats allow-from-host", v4(HOST4, B4, "udp", 1, 53), HU, XDP_DROP, "POLICY_DENY_RULE")
config(0)

# CIDR selects pods
check("A -> B tcp/9090, cidr rule, Cilium semantics: denied", v4(A4, B4, "tcp", 1, 9090), HA, XDP_DROP, "POLICY_DENIED")
config(CFG_CIDR_SELECTS_PODS)
check("A -> B tcp/9090, cidr rule, k8s semantics: allowed", v4(A4, B4, "tcp", 1, 9090), HA, XDP_REDIRECT,
      "KERNEL_REDIRECT")
# An entry for the CIDR identity that a selector or entity made (not DIR_CIDR_ONLY) is for
# addresses outside the cluster: it must not match pod A through A's address.
policy(ID_B, ID_CIDR_POD, INGRESS, ALLOW, 14, "tcp", 9091)
check("A -> B tcp/9091, world-only entry for the CIDR identity, k8s semantics: denied", v4(A4, B4, "tcp", 1, 9091),
      HA, XDP_DROP, "POLICY_DENIED")
config(CFG_EVENTS_ALLOWED)
check("allowed event with CFG_EVENTS_ALLOWED", v4(A4, B4, "tcp", 1, 80), HA, XDP_REDIRECT, "KERNEL_REDIRECT",
      want_event=dict(action=ALLOW, reason=0, rule=11, direction=INGRESS))
config(0)

# egress
check("A -> C, A not selected: pass to stack", v4(A4, C4, "tcp", 1, 443), HA, XDP_PASS, "KERNEL_PASS", want_event=False)
local_policy(ID_A, egress=1, egress_rule=88)
policy(ID_A, ID_C, EGRESS, ALLOW, 21, "tcp", 443)
policy(ID_A, ID_C, EGRESS, DENY, 22, "tcp", 25)
check("A -> C tcp/443 egress allowed", v4(A4, C4, "tcp", 1, 443), HA, XDP_PASS, "KERNEL_PASS")
check("A -> C tcp/444 egress default deny", v4(A4, C4, "tcp", 1, 444), HA, XDP_DROP, "POLICY_DENIED",
      want_event=dict(direction=EGRESS, rule=88, dst_identity=ID_C))
check("A -> C tcp/25 egress deny rule", v4(A4, C4, "tcp", 1, 25), HA, XDP_DROP, "POLICY_DENY_RULE",
      want_event=dict(direction=EGRESS, rule=22))
check("A -> B tcp/80 egress denied first (stops)", v4(A4, B4, "tcp", 1, 80), HA, XDP_DROP, "POLICY_DENIED",
      want_event=dict(direction=EGRESS, rule=88))
policy(ID_A, ID_B, EGRESS, ALLOW, 23)  # A may send anything to B
check("A -> B tcp/80 egress all-protocols allow, ingress allow", v4(A4, B4, "tcp", 1, 80), HA, XDP_REDIRECT, "KERNEL_REDIRECT")
check("A -> B tcp/81 egress allowed, ingress denied", v4(A4, B4, "tcp", 1, 81), HA, XDP_DROP, "POLICY_DENIED",
      want_event=dict(direction=INGRESS, rule=77))
map_delete("local_policy", struct.pack("<Q", ID_A))

# collision
local_policy(ID_C, collided=1)
check("collided source identity", v4(C4, B4, "tcp", 1, 80), HU, XDP_DROP, "IDENTITY_COLLISION",
      want_event=dict(reason=8, rule=0))
map_delete("local_policy", struct.pack("<Q", ID_C))

# fail open
config(CFG_FAIL_OPEN)
check("fail open: denied traffic passes", v4(A4, B4, "tcp", 1, 81), HA, XDP_PASS, "FAIL_OPEN", want_event=False)
check("fail open: spoofing still dropped", v4(B4, B4, "tcp", 1, 81), HA, XDP_DROP, "SPOOFED_SOURCE")
config(0)

# fragments v4
MF = 0x2000
check("v4 first fragment tcp/80 allowed", v4(A4, B4, "tcp", 1, 80, ident=100, flags_off=MF), HA, XDP_REDIRECT, "KERNEL_REDIRECT")
f = v4(A4, B4, "tcp", body=b"y" * 16, ident=100, flags_off=3)
check("v4 later fragment follows redirect", f, HA, XDP_REDIRECT, "FRAGMENT_FOLLOWED", want_frame=B_MACS + f[12:])
check("v4 later fragment of unknown datagram", v4(A4, B4, "tcp", body=b"y" * 16, ident=101, flags_off=3), HA,
      XDP_DROP, "FRAGMENT_WITHOUT_STATE", want_event=dict(reason=7))
check("v4 first fragment tcp/81 denied", v4(A4, B4, "tcp", 1, 81, ident=102, flags_off=MF), HA, XDP_DROP, "POLICY_DENIED")
check("v4 later fragment of a denied datagram", v4(A4, B4, "tcp", body=b"y" * 16, ident=102, flags_off=MF | 3), HA,
      XDP_DROP, "POLICY_DENIED")
check("v4 first fragment with truncated TCP header", v4(A4, B4, body=b"\0" * 8, proto="tcp", ident=103, flags_off=MF),
      HA, XDP_DROP, "MALFORMED")
check("v4 first fragment A->C passes", v4(A4, C4, "tcp", 1, 80, ident=104, flags_off=MF), HA, XDP_PASS, "KERNEL_PASS")
check("v4 later fragment A->C follows pass", v4(A4, C4, "tcp", body=b"z" * 8, ident=104, flags_off=5), HA, XDP_PASS,
      "FRAGMENT_FOLLOWED")

# IPv6
f = v6(A6, B6, "tcp", 1, 80)
check("v6 A->B tcp/80 allowed", f, HA, XDP_REDIRECT, "KERNEL_REDIRECT", want_frame=B_MACS + f[12:])
check("v6 A->B tcp/81 denied", v6(A6, B6, "tcp", 1, 81), HA, XDP_DROP, "POLICY_DENIED",
      want_event=dict(family=6, src_ip=ip6(A6), dst_ip=ip6(B6), dport=81))
check("v6 hop-by-hop + dest opts + routing, allowed", v6(A6, B6, "tcp", 1, 80, ext=[("hop", opt8()), ("dst", opt8()), ("rt", opt8())]),
      HA, XDP_REDIRECT, "KERNEL_REDIRECT")
check("v6 AH header, allowed", v6(A6, B6, "tcp", 1, 80, ext=[("ah", bytes([1]) + b"\0" * 10)]), HA, XDP_REDIRECT, "KERNEL_REDIRECT")
check("v6 8 extension headers ok", v6(A6, B6, "tcp", 1, 80, ext=[("dst", opt8())] * 8), HA, XDP_REDIRECT, "KERNEL_REDIRECT")
check("v6 9 extension headers malformed", v6(A6, B6, "tcp", 1, 80, ext=[("dst", opt8())] * 9), HA, XDP_DROP, "MALFORMED")
check("v6 truncated extension header", v6(A6, B6, "tcp", 1, 80, ext=[("dst", bytes([3]) + b"\0" * 6)], body=b""), HA, XDP_DROP, "MALFORMED")
check("v6 payload length past frame", v6(A6, B6, "tcp", 1, 80, plen_delta=4), HA, XDP_DROP, "MALFORMED")
check("v6 truncated TCP", v6(A6, B6, "tcp", body=b"\0" * 12), HA, XDP_DROP, "MALFORMED")
check("v6 bad version", eth(0x86DD) + b"\x40" + b"\0" * 60, HA, XDP_DROP, "MALFORMED")
check("v6 short header on uplink", eth(0x86DD) + b"\x60" + b"\0" * 20, HU, XDP_PASS, "NOT_MANAGED")
for t in (133, 134, 135, 136, 137, 130, 143):
    check(f"v6 ICMPv6 type {t} passed", v6("fe80::1", "ff02::1", "icmp6", 0, t), HA, XDP_PASS, "NON_IP")
check("v6 ND behind hop-by-hop passed", v6("fe80::1", "ff02::1", "icmp6", 0, 143, ext=[("hop", opt8())]), HA, XDP_PASS, "NON_IP")
check("v6 ICMPv6 echo denied", v6(A6, B6, "icmp6", 0, 128), HA, XDP_DROP, "POLICY_DENIED", want_event=dict(protocol=58, dport=128))
check("v6 first fragment allowed", v6(A6, B6, "tcp", 1, 80, ext=[("frag", frag6(0, True, 0xabcdef01))]), HA, XDP_REDIRECT, "KERNEL_REDIRECT")
check("v6 later fragment follows", v6(A6, B6, "tcp", ext=[("frag", frag6(3, False, 0xabcdef01))], body=b"q" * 16), HA,
      XDP_REDIRECT, "FRAGMENT_FOLLOWED")
check("v6 later fragment behind dest opts, unknown id", v6(A6, B6, "tcp", ext=[("dst", opt8()), ("frag", frag6(3, True, 5))], body=b"q" * 16), HA,
      XDP_DROP, "FRAGMENT_WITHOUT_STATE")
check("v6 first fragment with AH after the fragment header", v6(A6, B6, "tcp", 1, 80,
      ext=[("frag", frag6(0, True, 0x77)), ("ah", bytes([1]) + b"\0" * 10)]), HA, XDP_REDIRECT, "KERNEL_REDIRECT")
check("v6 later fragment of it follows", v6(A6, B6, "ah", ext=[("frag", frag6(5, False, 0x77))], body=b"q" * 16), HA,
      XDP_REDIRECT, "FRAGMENT_FOLLOWED")
check("v6 atomic fragment is a whole packet", v6(A6, B6, "tcp", 1, 80, ext=[("frag", frag6(0, False, 9))]), HA, XDP_REDIRECT, "KERNEL_REDIRECT")
check("v6 spoofed", v6(B6, A6, "tcp", 1, 80), HA, XDP_DROP, "SPOOFED_SOURCE")
check("v6 world -> B on uplink", v6("2001:db8::1", B6, "tcp", 1, 80), HU, XDP_DROP, "POLICY_DENIED", want_event=dict(src_identity=10))
check("v6 VLAN-tagged, stripped", v6(A6, B6, "tcp", 1, 80, vlan=9), HA, XDP_REDIRECT, "KERNEL_REDIRECT",
      want_frame=B_MACS + v6(A6, B6, "tcp", 1, 80)[12:])
check("SCTP ports", v4(A4, B4, "sctp", 1, 80), HA, XDP_DROP, "POLICY_DENIED", want_event=dict(protocol=132, dport=80, sport=1))

# ---------------------------------------------------------------- flow cache (flowcache.h)
# Verdicts of rules 8a-8e for unfragmented packets are cached per CPU, keyed by (ingress
# ifindex, family, protocol, addresses, ports / ICMP type and identifier), valid for one config
# generation. Every run is on CPU 0 (see run()), so a flow's next packet meets its cached verdict.
FLOW_F_SOCKET, FLOW_F_CT_REVERSE = 2, 4
FLOW_REVALIDATE_JIFFIES = 100


def private_map_id(name):
    """The id of the program's unpinned map `name`."""
    prog = json.loads(sh("bpftool", "-j", "prog", "show", "id", str(PROG_ID)))
    for mid in prog["map_ids"]:
        if json.loads(sh("bpftool", "-j", "map", "show", "id", str(mid)))["name"] == name:
            return str(mid)
    raise RuntimeError(f"the program has no {name} map")


FLOW_CACHE = private_map_id("flow_cache")
STEER_CACHE = private_map_id("steer_cache")
# Two entries (ways) per set; loaded by bpftool the cache has its compiled size (2048 sets).
FLOW_SET_BITS = (json.loads(sh("bpftool", "-j", "map", "show", "id", FLOW_CACHE))["max_entries"] // 2).bit_length() - 1


def flow_key(src, dst, proto, sport, dport, ifindex, icmp_id=0):
    """The flow key: the first 48 bytes of struct sl_pkt. ICMP: dport = type, icmp_id = the
    identifier field (l4() writes 1)."""
    a, b = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    return (a.packed.ljust(16, b"\0") + b.packed.ljust(16, b"\0")
            + struct.pack("<IHHHBBI", ifindex, sport, dport, icmp_id, a.version, PROTO[proto], 0))


FLOW_MULT = (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93,
             0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53)


def flow_set(key):
    """sl_flow_set: multiply-shift over the key's six 64-bit words, top FLOW_SET_BITS bits."""
    h = sum(w * m for (w,), m in zip(struct.iter_unpack("<Q", key), FLOW_MULT)) & ((1 << 64) - 1)
    return h >> (64 - FLOW_SET_BITS)


def flow_entry(key, cpu=0):
    """CPU cpu's entry for the flow (struct sl_flow_entry as a dict) in either way of its set, or
    None when neither holds a valid entry of this flow."""
    for way in (0, 1):
        r = json.loads(sh("bpftool", "-j", "map", "lookup", "id", FLOW_CACHE, "key", "hex",
                          *hexb(struct.pack("<I", flow_set(key) * 2 + way))))
        raw = next(bytes(int(x, 16) for x in v["value"]) for v in r["values"] if v["cpu"] == cpu)
        (k, decided, generation, sid, did, rule, target, macs, action, slot, reason, direction, flags,
         valid) = struct.unpack("<48sQQQQII12sBBBBB7xQ", raw)
        if valid & 1 and k == key:
            return dict(decided=decided, generation=generation, src_identity=sid, dst_identity=did,
                        rule=rule, target=target, macs=macs, action=action, slot=slot, reason=reason,
                        direction=direction, flags=flags)
    return None


def steer_cached(src, dst, ifindex, cpu=0):
    """Whether CPU cpu's steering cache (steercache.h) holds a valid entry of the current
    generation for (ifindex, src, dst)."""
    a, b = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    addrs = a.packed.ljust(16, b"\0") + b.packed.ljust(16, b"\0")
    for entry in json.loads(sh("bpftool", "-j", "map", "dump", "id", STEER_CACHE)):
        raw = next(bytes(int(x, 16) for x in v["value"]) for v in entry["values"] if v["cpu"] == cpu)
        k, idx, valid, generation, _decided = struct.unpack("<32sIIQQ", raw)
        if valid and k == addrs and idx == ifindex and generation == GENERATION:
            return True
    return False


def expect(name, problems):
    print(("ok   " if not problems else "FAIL ") + name + ("" if not problems else ": " + "; ".join(problems)))
    if problems:
        FAILS.append(name)


def expect_cached(name, key, **want):
    """The flow's entry on CPU 0 is valid for the current generation and has the fields in want."""
    e = flow_entry(key)
    problems = []
    if e is None:
        problems.append("not cached")
    else:
        if e["generation"] != GENERATION:
            problems.append(f"generation {e['generation']} != {GENERATION}")
        problems += [f"{k}={e[k]} != {v}" for k, v in want.items() if e[k] != v]
    expect(name, problems)
    return e


def check_hit(name, frame, ifindex, want_ret, want_slot, key, want_frame=None, want_event=None, **entry):
    """After a generation bump the flow's first packet is decided by the full path and cached; the
    second is served from the cache (its entry is not decided again: same `decided` jiffies,
    unless 100 jiffies passed and it was rightly revalidated). Both give the same retval, counter
    slot, output frame and event."""
    write_config()
    out1 = check(name + " [full path]", frame, ifindex, want_ret, want_slot, want_frame, want_event)
    e1 = expect_cached(name + " [cached]", key, **entry)
    time.sleep(0.02)  # a jiffy or more: a second decision would show in `decided`
    out2 = check(name + " [cache hit]", frame, ifindex, want_ret, want_slot, want_frame, want_event)
    e2 = flow_entry(key)
    problems = []
    if out1 != out2:
        problems.append(f"frame {out2.hex()} != {out1.hex()}")
    if e1 is None or e2 is None:
        problems.append("not cached")
    elif e2["decided"] != e1["decided"]:
        if e2["decided"] - e1["decided"] < FLOW_REVALIDATE_JIFFIES:
            problems.append(f"decided again after {e2['decided'] - e1['decided']} jiffies: not a hit")
        else:
            print(f"note {name}: revalidated ({e2['decided'] - e1['decided']} jiffies between the runs)")
    expect(name + " [hit = miss]", problems)


import time

f = v4(A4, B4, "tcp", 2001, 80)
check_hit("fc: v4 A->B tcp/80 redirect, MACs rewritten", f, HA, XDP_REDIRECT, "KERNEL_REDIRECT",
          flow_key(A4, B4, "tcp", 2001, 80, HA), want_frame=B_MACS + f[12:], want_event=False,
          action=ALLOW, slot=CNT["KERNEL_REDIRECT"], target=HB, macs=B_MACS, flags=FLOW_F_SOCKET)
check("fc: the cached redirect on a VLAN-tagged frame of the flow strips the tag", v4(A4, B4, "tcp", 2001, 80, vlan=5),
      HA, XDP_REDIRECT, "KERNEL_REDIRECT", want_frame=B_MACS + f[12:])

# Two ways per set: two flows whose keys hash to one set are both served from the cache; a
# third flow of that set takes the way of the older decision.
def set_of_port(sport):
    return flow_set(flow_key(A4, B4, "tcp", sport, 80, HA))


SHARED = [p for p in range(3000, 65000) if set_of_port(p) == set_of_port(3000)][:3]
assert len(SHARED) == 3, f"no three ports of one set below 65000: {SHARED}"
write_config()
for i, sport in enumerate(SHARED):
    g = v4(A4, B4, "tcp", sport, 80)
    check(f"fc ways: flow {i + 1} of set {set_of_port(sport)} (sport {sport})", g, HA, XDP_REDIRECT,
          "KERNEL_REDIRECT", want_frame=B_MACS + g[12:], want_event=False)
    if i == 1:
        expect("fc ways: two flows of one set are both cached",
               [f"sport {p} not cached" for p in SHARED[:2] if flow_entry(flow_key(A4, B4, "tcp", p, 80, HA)) is None])
    time.sleep(0.01)  # a later jiffy, so the decisions have an order
cached = [p for p in SHARED if flow_entry(flow_key(A4, B4, "tcp", p, 80, HA)) is not None]
expect("fc ways: the third flow of a set replaces the older decision", [] if cached == SHARED[1:] else [f"cached {cached}, want {SHARED[1:]}"])
check_hit("fc: v4 A->B tcp/81 default deny, event", v4(A4, B4, "tcp", 2001, 81), HA, XDP_DROP, "POLICY_DENIED",
          flow_key(A4, B4, "tcp", 2001, 81, HA),
          want_event=dict(action=DENY, reason=1, rule=77, direction=INGRESS, src_identity=ID_A, dst_identity=ID_B,
                          dport=81, sport=2001, protocol=6, family=4, ifindex=HA),
          action=DENY, reason=1, rule=77, flags=FLOW_F_SOCKET | FLOW_F_CT_REVERSE)
check_hit("fc: v4 A->B udp/53 deny rule, event", v4(A4, B4, "udp", 2001, 53), HA, XDP_DROP, "POLICY_DENY_RULE",
          flow_key(A4, B4, "udp", 2001, 53, HA), want_event=dict(reason=2, rule=12, direction=INGRESS),
          action=DENY, reason=2, rule=12)
check_hit("fc: v4 A->C tcp/443 pass (A not selected)", v4(A4, C4, "tcp", 2001, 443), HA, XDP_PASS, "KERNEL_PASS",
          flow_key(A4, C4, "tcp", 2001, 443, HA), want_frame=v4(A4, C4, "tcp", 2001, 443), want_event=False,
          action=ALLOW, slot=CNT["KERNEL_PASS"], target=0)
check_hit("fc: world -> B on the uplink, default deny", v4("9.9.9.9", B4, "tcp", 2001, 80), HU, XDP_DROP,
          "POLICY_DENIED", flow_key("9.9.9.9", B4, "tcp", 2001, 80, HU),
          want_event=dict(src_identity=9, direction=INGRESS, ifindex=HU))
check_hit("fc: v4 A->B icmp echo (identifier in the key)", v4(A4, B4, "icmp", 0, 8), HA, XDP_REDIRECT,
          "KERNEL_REDIRECT", flow_key(A4, B4, "icmp", 0, 8, HA, icmp_id=1))
f = v6(A6, B6, "tcp", 2001, 80)
check_hit("fc: v6 A->B tcp/80 redirect", f, HA, XDP_REDIRECT, "KERNEL_REDIRECT", flow_key(A6, B6, "tcp", 2001, 80, HA),
          want_frame=B_MACS + f[12:])
check_hit("fc: v6 A->B tcp/81 denied", v6(A6, B6, "tcp", 2001, 81), HA, XDP_DROP, "POLICY_DENIED",
          flow_key(A6, B6, "tcp", 2001, 81, HA), want_event=dict(family=6, src_ip=ip6(A6), dst_ip=ip6(B6), dport=81))
config(CFG_EVENTS_ALLOWED)
check_hit("fc: allowed event (CFG_EVENTS_ALLOWED) from the cache too", v4(A4, B4, "tcp", 2001, 80), HA, XDP_REDIRECT,
          "KERNEL_REDIRECT", flow_key(A4, B4, "tcp", 2001, 80, HA),
          want_event=dict(action=ALLOW, reason=0, rule=11, direction=INGRESS, src_identity=ID_A, dst_identity=ID_B))
config(0)
local_policy(ID_C, collided=1)
check_hit("fc: collided source identity", v4(C4, B4, "tcp", 2001, 80), HU, XDP_DROP, "IDENTITY_COLLISION",
          flow_key(C4, B4, "tcp", 2001, 80, HU), want_event=dict(reason=8, rule=0), flags=FLOW_F_SOCKET)
map_delete("local_policy", struct.pack("<Q", ID_C))
check("fc: collision lifted (generation bump): policy decides the flow", v4(C4, B4, "tcp", 2001, 80), HU, XDP_DROP,
      "POLICY_DENIED")
for name, fr, ifx in (("spoofed source", v4(B4, B4, "tcp", 2002, 80), HA),
                      ("first fragment", v4(A4, B4, "tcp", 2002, 80, ident=500, flags_off=0x2000), HA),
                      ("uplink, not pod traffic", v4(C4, "8.8.8.8", "udp", 2002, 53), HU)):
    run(fr, ifx)
    src, dst = (B4, B4) if name == "spoofed source" else ((C4, "8.8.8.8") if ifx == HU else (A4, B4))
    proto, dport = ("udp", 53) if ifx == HU else ("tcp", 80)
    expect(f"fc: {name} is not cached", ["cached"] if flow_entry(flow_key(src, dst, proto, 2002, dport, ifx)) else [])

# Each map write is followed by a generation bump (config written last), as the loader does: the
# next packet is decided on the new state. Without the bump the cached verdict would stand.
f = v4(A4, B4, "tcp", 2003, 80)
check("fc: A->B tcp/80 allowed", f, HA, XDP_REDIRECT, "KERNEL_REDIRECT")
map_delete("policy", policy_key(ID_B, ID_A, INGRESS, "tcp", 80), bump=False)
check("fc: policy entry deleted, generation not bumped: the cached allow stands", f, HA, XDP_REDIRECT,
      "KERNEL_REDIRECT")
write_config()
check("fc: generation bumped: the policy change is honoured at the next packet", f, HA, XDP_DROP, "POLICY_DENIED",
      want_event=dict(reason=1, rule=77))
expect_cached("fc: the deny cached under the new generation", flow_key(A4, B4, "tcp", 2003, 80, HA), action=DENY)
policy(ID_B, ID_A, INGRESS, ALLOW, 11, "tcp", 80)  # map_update bumps
check("fc: policy restored: allowed at the next packet", f, HA, XDP_REDIRECT, "KERNEL_REDIRECT",
      want_frame=B_MACS + f[12:])
local_policy(ID_B, ingress=0, ingress_rule=0)
check("fc: B's ingress no longer enforced: tcp/81 allowed at the next packet", v4(A4, B4, "tcp", 2001, 81), HA,
      XDP_REDIRECT, "KERNEL_REDIRECT")
local_policy(ID_B, ingress=1, ingress_rule=77)
check("fc: enforced again: tcp/81 denied at the next packet", v4(A4, B4, "tcp", 2001, 81), HA, XDP_DROP,
      "POLICY_DENIED")
endpoint(HB, ID_B, MAC["a_pod"], MAC["b_host"])
check("fc: B's pod MAC changed: the next redirect writes the new one", f, HA, XDP_REDIRECT, "KERNEL_REDIRECT",
      want_frame=MAC["a_pod"] + MAC["b_host"] + f[12:])
endpoint(HB, ID_B, MAC["b_pod"], MAC["b_host"])
ipcache(f"{B4}/32", ID_C, HB)
check("fc: B's address now has identity C (no policy): the next packet passes policy-free", f, HA, XDP_REDIRECT,
      "KERNEL_REDIRECT")
check("fc: ... and tcp/81 too", v4(A4, B4, "tcp", 2001, 81), HA, XDP_REDIRECT, "KERNEL_REDIRECT")
ipcache(f"{B4}/32", ID_B, HB)
check("fc: identity B again: tcp/81 denied", v4(A4, B4, "tcp", 2001, 81), HA, XDP_DROP, "POLICY_DENIED")
config(CFG_FAIL_OPEN)
check("fc: fail open (config write): a cached drop is not used", v4(A4, B4, "tcp", 2001, 81), HA, XDP_PASS, "FAIL_OPEN")
config(0)
# The redirect is carried out again on every hit: a devmap entry gone (without a bump) fails it.
check("fc: A->B tcp/80 cached", f, HA, XDP_REDIRECT, "KERNEL_REDIRECT")
map_delete("redirect_devmap", struct.pack("<I", HB), bump=False)
check("fc: devmap entry gone: the cached redirect fails, frame passed unmodified", f, HA, XDP_PASS, "REDIRECT_FAILED",
      want_frame=f)
map_update("redirect_devmap", struct.pack("<I", HB), devmap_val(HB))
check("fc: devmap entry back", f, HA, XDP_REDIRECT, "KERNEL_REDIRECT")


# connection tracking (conntrack.h): replies of connections the in-kernel policy allowed skip
# policy (CNT_CT_REPLY); forward packets are always decided by policy.
import time

A_MACS = MAC["a_pod"] + MAC["a_host"]
CT_F_REPLY_SEEN = 1
NSEC = 1_000_000_000


def ct_key(src, dst, proto, sport, dport):
    a, b = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    return (a.packed.ljust(16, b"\0") + b.packed.ljust(16, b"\0")
            + struct.pack("<HHBBH", sport, dport, PROTO[proto], a.version, 0))


def ct_entry(src, dst, proto, sport, dport):
    """(last_seen_ns, flags) of a conntrack entry, or None."""
    v = map_lookup("conntrack", ct_key(src, dst, proto, sport, dport))
    return None if v is None else struct.unpack("<QII", v)[:2]


def ct_write(src, dst, proto, sport, dport, age_s):
    """An entry as userspace would write it, last seen age_s ago (bpf_ktime_get_ns is CLOCK_MONOTONIC).
    False (and nothing written) when the host has not been up that long."""
    last = time.clock_gettime_ns(time.CLOCK_MONOTONIC) - int(age_s * NSEC)
    if last <= 0:
        print(f"skip ct entry {age_s} s old: uptime is shorter")
        return False
    map_update("conntrack", ct_key(src, dst, proto, sport, dport), struct.pack("<QII", last, 0, 0))
    return True


def ct_expect(name, tup, present=True, flags=None):
    e = ct_entry(*tup)
    problems = []
    if (e is not None) != present:
        problems.append(f"entry {'missing' if present else 'present: ' + str(e)}")
    elif present and flags is not None and e[1] != flags:
        problems.append(f"flags {e[1]} != {flags}")
    print(("ok   " if not problems else "FAIL ") + name + ("" if not problems else ": " + "; ".join(problems)))
    if problems:
        FAILS.append(name)
    return e


# B (ingress default deny, every UDP port denied by rule 12) opens connections to A (no policy).
f = v4(A4, B4, "udp", 53, 40000)
check("ct: unsolicited A->B udp 53->40000 denied (B's deny rule)", f, HA, XDP_DROP, "POLICY_DENY_RULE")
ct_expect("ct: a denied packet is not tracked", (A4, B4, "udp", 53, 40000), present=False)
g = v4(B4, A4, "udp", 40000, 53)
check("ct: B->A udp 40000->53 allowed", g, HB, XDP_REDIRECT, "KERNEL_REDIRECT", want_frame=A_MACS + g[12:])
e0 = ct_expect("ct: B->A udp tracked by its forward tuple", (B4, A4, "udp", 40000, 53), flags=0)
check("ct: A->B udp reply 53->40000 passes despite B's deny rule", f, HA, XDP_REDIRECT, "CT_REPLY",
      want_frame=B_MACS + f[12:], want_event=False)
e1 = ct_expect("ct: the reply sets CT_F_REPLY_SEEN", (B4, A4, "udp", 40000, 53), flags=CT_F_REPLY_SEEN)
ok = e0 is not None and e1 is not None and e1[0] > e0[0]
print(("ok   " if ok else "FAIL ") + "ct: the reply refreshes last_seen_ns")
if not ok:
    FAILS.append("ct refresh")
ct_expect("ct: a reply records no entry of its own", (A4, B4, "udp", 53, 40000), present=False)
check("ct: A->B reply, VLAN-tagged, tag stripped", v4(A4, B4, "udp", 53, 40000, vlan=5), HA, XDP_REDIRECT, "CT_REPLY",
      want_frame=B_MACS + f[12:])
check("ct: A->B udp from another port still denied", v4(A4, B4, "udp", 54, 40000), HA, XDP_DROP, "POLICY_DENY_RULE")
check("ct: A->B tcp with the udp flow's ports is not a reply", v4(A4, B4, "tcp", 53, 40000), HA, XDP_DROP,
      "POLICY_DENIED")
check("ct: the reply tuple on B's veth is spoofed (checked first)", f, HB, XDP_DROP, "SPOOFED_SOURCE")
check("ct: B->A udp again: forward, decided by policy", g, HB, XDP_REDIRECT, "KERNEL_REDIRECT")
check("ct: A->B first fragment of a reply", v4(A4, B4, "udp", 53, 40000, ident=300, flags_off=MF), HA, XDP_REDIRECT,
      "CT_REPLY")
f = v4(A4, B4, "udp", body=b"y" * 16, ident=300, flags_off=3)
check("ct: A->B later fragment of the reply follows it", f, HA, XDP_REDIRECT, "FRAGMENT_FOLLOWED",
      want_frame=B_MACS + f[12:])
check("ct: B->A tcp 40001->22 allowed", v4(B4, A4, "tcp", 40001, 22), HB, XDP_REDIRECT, "KERNEL_REDIRECT")
check("ct: A->B tcp reply 22->40001 passes B's default deny", v4(A4, B4, "tcp", 22, 40001), HA, XDP_REDIRECT, "CT_REPLY")
check("ct: B->A sctp 40003->9 allowed", v4(B4, A4, "sctp", 40003, 9), HB, XDP_REDIRECT, "KERNEL_REDIRECT")
check("ct: A->B sctp reply", v4(A4, B4, "sctp", 9, 40003), HA, XDP_REDIRECT, "CT_REPLY")

# ICMP echo: the key is (requester, responder, identifier, 0).
check("ct: B->A echo request id 0x4242 allowed", v4(B4, A4, "icmp", body=echo(8, 0x4242)), HB, XDP_REDIRECT,
      "KERNEL_REDIRECT")
ct_expect("ct: echo request tracked as (B, A, id, 0)", (B4, A4, "icmp", 0x4242, 0), flags=0)
f = v4(A4, B4, "icmp", body=echo(0, 0x4242))
check("ct: A->B echo reply id 0x4242 passes (B allows only echo requests)", f, HA, XDP_REDIRECT, "CT_REPLY",
      want_frame=B_MACS + f[12:])
check("ct: A->B echo reply with another id denied", v4(A4, B4, "icmp", body=echo(0, 0x4243)), HA, XDP_DROP,
      "POLICY_DENIED", want_event=dict(dport=0, sport=0, protocol=1))
check("ct: A->B echo request with that id is policy's (allowed by rule 14)", v4(A4, B4, "icmp", body=echo(8, 0x4242)),
      HA, XDP_REDIRECT, "KERNEL_REDIRECT")
check("ct: B->A icmp timestamp (13) allowed", v4(B4, A4, "icmp", body=echo(13, 0x4244)), HB, XDP_REDIRECT,
      "KERNEL_REDIRECT")
ct_expect("ct: other ICMP types are not tracked", (B4, A4, "icmp", 0x4244, 0), present=False)
check("ct: A->B timestamp reply (14) is not a reply", v4(A4, B4, "icmp", body=echo(14, 0x4244)), HA, XDP_DROP,
      "POLICY_DENIED")

# IPv6
check("ct: v6 B->A udp 40002->53 allowed", v6(B6, A6, "udp", 40002, 53), HB, XDP_REDIRECT, "KERNEL_REDIRECT")
ct_expect("ct: v6 tracked", (B6, A6, "udp", 40002, 53), flags=0)
f = v6(A6, B6, "udp", 53, 40002)
check("ct: v6 A->B udp reply passes", f, HA, XDP_REDIRECT, "CT_REPLY", want_frame=B_MACS + f[12:])
check("ct: v6 reply behind a destination options header", v6(A6, B6, "udp", 53, 40002, ext=[("dst", opt8())]), HA,
      XDP_REDIRECT, "CT_REPLY")
check("ct: v6 A->B udp 53->40003 denied", v6(A6, B6, "udp", 53, 40003), HA, XDP_DROP, "POLICY_DENY_RULE")
check("ct: v6 B->A echo request (128) id 0x77 allowed", v6(B6, A6, "icmp6", body=echo(128, 0x77)), HB, XDP_REDIRECT,
      "KERNEL_REDIRECT")
check("ct: v6 A->B echo reply (129) id 0x77 passes", v6(A6, B6, "icmp6", body=echo(129, 0x77)), HA, XDP_REDIRECT,
      "CT_REPLY")
check("ct: v6 A->B echo reply id 0x78 denied", v6(A6, B6, "icmp6", body=echo(129, 0x78)), HA, XDP_DROP, "POLICY_DENIED")
check("ct: v4 echo reply does not match the v6 entry", v4(A4, B4, "icmp", body=echo(0, 0x77)), HA, XDP_DROP,
      "POLICY_DENIED")

# A with an ingress policy; B allows udp/5000 from A (B's every-UDP deny rule lifted meanwhile).
local_policy(ID_A, ingress=1, ingress_rule=99)
map_delete("policy", policy_key(ID_B, 0, INGRESS, "udp"))
policy(ID_B, ID_A, INGRESS, ALLOW, 17, "udp", 5000)
r = v4(B4, A4, "udp", 5000, 41000)
check("ct: unsolicited B->A udp 5000->41000 denied by A's ingress", r, HB, XDP_DROP, "POLICY_DENIED",
      want_event=dict(rule=99, direction=INGRESS, src_identity=ID_B, dst_identity=ID_A))
fw = v4(A4, B4, "udp", 41000, 5000)
check("ct: A->B udp 41000->5000 allowed", fw, HA, XDP_REDIRECT, "KERNEL_REDIRECT")
check("ct: B->A reply from 5000 passes A's ingress policy", r, HB, XDP_REDIRECT, "CT_REPLY",
      want_frame=A_MACS + r[12:], want_event=False)
check("ct: B->A udp 5000->41001 still denied", v4(B4, A4, "udp", 5000, 41001), HB, XDP_DROP, "POLICY_DENIED")
check("ct: B->A echo reply without a request denied", v4(B4, A4, "icmp", body=echo(0, 0x4250)), HB, XDP_DROP,
      "POLICY_DENIED")
config(CFG_EVENTS_ALLOWED)
check("ct: reply event (CFG_EVENTS_ALLOWED): allowed, rule 0, direction of the sender", r, HB, XDP_REDIRECT,
      "CT_REPLY", want_event=dict(action=ALLOW, reason=0, rule=0, direction=EGRESS, src_identity=ID_B,
                                  dst_identity=ID_A, sport=5000, dport=41000, ifindex=HB))
config(0)
local_policy(ID_A, ingress=1, ingress_rule=99, collided=1)
check("ct: identity collision checked before the reply shortcut", r, HB, XDP_DROP, "IDENTITY_COLLISION")
local_policy(ID_A, ingress=1, ingress_rule=99)
map_delete("policy", policy_key(ID_B, ID_A, INGRESS, "udp", 5000))
check("ct: policy revoked: the forward direction is denied at once", fw, HA, XDP_DROP, "POLICY_DENIED")
check("ct: policy revoked: replies pass until the entry expires", r, HB, XDP_REDIRECT, "CT_REPLY")

# Expiry, on entries written as userspace would (also checks the key layout): UDP 60 s, TCP 1 h.
# (An entry cannot be older than the host's uptime: the cases that need more are skipped.)
if ct_write(A4, B4, "udp", 42000, 5000, 61):
    check("ct: udp entry 61 s old is expired", v4(B4, A4, "udp", 5000, 42000), HB, XDP_DROP, "POLICY_DENIED")
if ct_write(A4, B4, "udp", 42001, 5000, 50):
    check("ct: udp entry 50 s old is honoured", v4(B4, A4, "udp", 5000, 42001), HB, XDP_REDIRECT, "CT_REPLY")
if ct_write(A4, B4, "tcp", 42002, 80, 3600 + 60):
    check("ct: tcp entry 61 min old is expired", v4(B4, A4, "tcp", 80, 42002), HB, XDP_DROP, "POLICY_DENIED")
if ct_write(A4, B4, "tcp", 42003, 80, 120):
    check("ct: tcp entry 120 s old is honoured", v4(B4, A4, "tcp", 80, 42003), HB, XDP_REDIRECT, "CT_REPLY")
if ct_write(A4, B4, "icmp", 0x99, 0, 61):
    check("ct: echo entry 61 s old is expired", v4(B4, A4, "icmp", body=echo(0, 0x99)), HB, XDP_DROP, "POLICY_DENIED")
if ct_write(A6, B6, "udp", 42004, 5000, 10):
    check("ct: v6 entry written by userspace honoured", v6(B6, A6, "udp", 5000, 42004), HB, XDP_REDIRECT, "CT_REPLY")
# Fail open tracks nothing.
config(CFG_FAIL_OPEN)
check("ct: fail open: A->B passes untracked", v4(A4, B4, "udp", 43000, 5000), HA, XDP_PASS, "FAIL_OPEN")
config(0)
ct_expect("ct: fail open records no entry", (A4, B4, "udp", 43000, 5000), present=False)
check("ct: so the reply is policy's", v4(B4, A4, "udp", 5000, 43000), HB, XDP_DROP, "POLICY_DENIED")

map_delete("local_policy", struct.pack("<Q", ID_A))
policy(ID_B, 0, INGRESS, DENY, 12, "udp")

# Expired (last seen 1 ns after boot) with CT_F_REPLY_SEEN; a forward packet revives it with fresh flags.
map_update("conntrack", ct_key(B4, A4, "udp", 40010, 53), struct.pack("<QII", 1, CT_F_REPLY_SEEN, 0))
check("ct: B->A forward on an expired entry allowed", v4(B4, A4, "udp", 40010, 53), HB, XDP_REDIRECT, "KERNEL_REDIRECT")
e = ct_expect("ct: an expired entry revived by a forward packet starts over", (B4, A4, "udp", 40010, 53), flags=0)
ok = e is not None and e[0] > time.clock_gettime_ns(time.CLOCK_MONOTONIC) - 10 * NSEC
print(("ok   " if ok else "FAIL ") + "ct: revived entry last seen now")
if not ok:
    FAILS.append("ct revive")


# Flow cache and conntrack. A cached drop of a packet that could be a reply checks the reverse
# tuple on every hit: once the other side opens the connection, the packet is a reply.
d = v4(A4, B4, "udp", 53, 40100)
check_hit("fc ct: unsolicited A->B udp 53->40100 denied", d, HA, XDP_DROP, "POLICY_DENY_RULE",
          flow_key(A4, B4, "udp", 53, 40100, HA), flags=FLOW_F_SOCKET | FLOW_F_CT_REVERSE)
g = v4(B4, A4, "udp", 40100, 53)
check("fc ct: B->A udp 40100->53 allowed (recorded)", g, HB, XDP_REDIRECT, "KERNEL_REDIRECT")
check("fc ct: the cached drop A->B is now a reply (no generation bump)", d, HA, XDP_REDIRECT, "CT_REPLY",
      want_frame=B_MACS + d[12:])
expect_cached("fc ct: the reply is cached", flow_key(A4, B4, "udp", 53, 40100, HA), action=ALLOW,
              slot=CNT["CT_REPLY"], target=HB)
check("fc ct: the cached reply", d, HA, XDP_REDIRECT, "CT_REPLY", want_frame=B_MACS + d[12:])
# A cached allow does not touch conntrack: the full path, taken again once the entry is 100
# jiffies old (at most 1 s), records the connection again. (Where a run was itself such a
# revalidation, shown by the flow's `decided`, the hit-only expectation is skipped.)
gk = flow_key(B4, A4, "udp", 40100, 53, HB)
e0, g0 = ct_entry(B4, A4, "udp", 40100, 53), flow_entry(gk)
check("fc ct: B->A again (cached allow)", g, HB, XDP_REDIRECT, "KERNEL_REDIRECT")
e1, g1 = ct_entry(B4, A4, "udp", 40100, 53), flow_entry(gk)
if g0 and g1 and g0["decided"] == g1["decided"]:
    expect("fc ct: a cache hit leaves the conntrack entry alone", [] if e1 == e0 else [f"{e0} -> {e1}"])
else:
    print("note fc ct: B->A was revalidated between the runs: hit-only check skipped")
map_delete("conntrack", ct_key(B4, A4, "udp", 40100, 53), bump=False)
g0 = flow_entry(gk)
check("fc ct: its conntrack entry deleted (no bump): the cached allow stands", g, HB, XDP_REDIRECT, "KERNEL_REDIRECT")
g1 = flow_entry(gk)
if g0 and g1 and g0["decided"] == g1["decided"]:
    ct_expect("fc ct: ... and a hit records nothing", (B4, A4, "udp", 40100, 53), present=False)
else:
    print("note fc ct: B->A was revalidated between the runs: hit-only check skipped")
time.sleep(1.2)  # > 100 jiffies at any HZ >= 100
check("fc ct: 100 jiffies later the full path decides again and records the connection", g, HB, XDP_REDIRECT,
      "KERNEL_REDIRECT")
e2 = ct_expect("fc ct: recorded again", (B4, A4, "udp", 40100, 53), flags=0)
ok = e2 is not None and e2[0] > time.clock_gettime_ns(time.CLOCK_MONOTONIC) - 2 * NSEC
expect("fc ct: recorded now", [] if ok else [f"{e2}"])
check("fc ct: A->B reply", d, HA, XDP_REDIRECT, "CT_REPLY")


# AF_XDP steering: a copy-mode socket bound to A's veth queue 0, placed in `xsks` slot 0 and
# `xsk_slots[(A's ifindex, queue 0)] = 0`.
def bpf_map_get_fd_by_id(map_id):
    attr = ctypes.create_string_buffer(struct.pack("<I", map_id) + b"\0" * 124, 128)
    fd = libc.syscall(321, 14, attr, 128)  # BPF_MAP_GET_FD_BY_ID
    if fd < 0:
        raise OSError(ctypes.get_errno(), "BPF_MAP_GET_FD_BY_ID")
    return fd


def bpf_map_update(fd, key, value):
    k, v = ctypes.create_string_buffer(key, len(key)), ctypes.create_string_buffer(value, len(value))
    attr = ctypes.create_string_buffer(struct.pack("<IIQQQ", fd, 0, ctypes.addressof(k), ctypes.addressof(v), 0), 32)
    if libc.syscall(321, 2, attr, 32) < 0:  # BPF_MAP_UPDATE_ELEM
        raise OSError(ctypes.get_errno(), "BPF_MAP_UPDATE_ELEM")


def setns(fd):
    if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
        raise OSError(ctypes.get_errno(), "setns")


def xsk_socket(ifindex, queue=0):
    """A bound copy-mode AF_XDP socket, created inside the test netns (python 3.11 has no os.setns)."""
    import socket
    orig = os.open("/proc/self/ns/net", os.O_RDONLY)
    nsfd = os.open(f"/var/run/netns/{NS}", os.O_RDONLY)
    setns(nsfd)
    try:
        sk = socket.socket(44, socket.SOCK_RAW, 0)  # AF_XDP
        umem = mmap.mmap(-1, 4096 * 64)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(umem))
        sk.setsockopt(283, 4, struct.pack("<QQIIII", addr, 4096 * 64, 4096, 0, 0, 0))  # XDP_UMEM_REG
        for opt in (5, 6, 2):  # fill ring, completion ring, RX ring
            sk.setsockopt(283, opt, struct.pack("<I", 64))
        sxdp = ctypes.create_string_buffer(struct.pack("<HHIII", 44, 2, ifindex, queue, 0), 16)  # XDP_COPY
        if libc.bind(sk.fileno(), sxdp, 16) < 0:
            raise OSError(ctypes.get_errno(), "bind AF_XDP")
    finally:
        setns(orig)
        os.close(orig)
        os.close(nsfd)
    return sk, umem


# Cached verdicts of A's flows (A is not in kernel mode: they record that rule 7 applies).
fs_allow, fs_deny = v4(A4, B4, "tcp", 2100, 80), v4(A4, B4, "tcp", 2100, 81)
check("fc socket: A->B tcp/80 allowed in kernel (no socket yet)", fs_allow, HA, XDP_REDIRECT, "KERNEL_REDIRECT")
check("fc socket: A->B tcp/81 denied in kernel (no socket yet)", fs_deny, HA, XDP_DROP, "POLICY_DENIED")
expect_cached("fc socket: the allow is cached, socket rule recorded", flow_key(A4, B4, "tcp", 2100, 80, HA),
              action=ALLOW, flags=FLOW_F_SOCKET)
expect_cached("fc socket: the drop is cached, socket rule recorded", flow_key(A4, B4, "tcp", 2100, 81, HA),
              action=DENY, flags=FLOW_F_SOCKET | FLOW_F_CT_REVERSE)

xsks_fd = bpf_map_get_fd_by_id(int(map_id("xsks")))
sock, _umem = xsk_socket(HA)
bpf_map_update(xsks_fd, struct.pack("<I", 0), struct.pack("<I", sock.fileno()))
slots_fd = bpf_map_get_fd_by_id(int(map_id("xsk_slots")))
bpf_map_update(slots_fd, struct.pack("<II", HA, 0), struct.pack("<I", 0))
check("socket on the queue: steered to AF_XDP (no policy in kernel)", v4(A4, B4, "tcp", 1, 81), HA, XDP_REDIRECT,
      "TO_SOCKET", want_event=False)
expect("steer cache: the steered pair is cached", [] if steer_cached(A4, B4, HA) else ["not cached"])
def no_current_flow_entry(key):
    e = flow_entry(key)
    return [] if e is None or e["generation"] != GENERATION else [f"cached: {e}"]


expect("steer cache: no per-flow entry for it", no_current_flow_entry(flow_key(A4, B4, "tcp", 1, 81, HA)))
check("steer cache: another flow of the pair goes to the socket from it", v4(A4, B4, "udp", 7, 9), HA, XDP_REDIRECT,
      "TO_SOCKET", want_event=False)
expect("steer cache: still no per-flow entry", no_current_flow_entry(flow_key(A4, B4, "udp", 7, 9, HA)))
# The socket came by map writes the generation does not cover: a hit looks for it first.
check("fc socket: the cached allow's next packet goes to the new socket", fs_allow, HA, XDP_REDIRECT, "TO_SOCKET",
      want_frame=fs_allow, want_event=False)
check("fc socket: so does the cached drop's", fs_deny, HA, XDP_REDIRECT, "TO_SOCKET", want_event=False)
check("socket on the queue: a later fragment stays in the kernel (no first-fragment state: dropped)",
      v4(A4, B4, "tcp", body=b"y" * 16, ident=999, flags_off=3), HA, XDP_DROP, "FRAGMENT_WITHOUT_STATE")
check("socket on the queue: traffic to a non-endpoint destination stays in the kernel",
      v4(A4, "8.8.8.8", "udp", 1, 53), HA, XDP_PASS, "KERNEL_PASS", want_event=False)
check("socket on the queue: spoofing dropped first", v4(B4, B4, "tcp", 1, 81), HA, XDP_DROP, "SPOOFED_SOURCE")
check("socket on the queue: malformed dropped first", v4(A4, B4, ihl=3), HA, XDP_DROP, "MALFORMED")
check("socket on the queue: not pod traffic passed", v4(C4, "8.8.8.8", "udp", 1, 53), HU, XDP_PASS, "NOT_MANAGED")
check("socket on the queue: another interface's traffic is not steered into it",
      v4(HOST4, B4, "tcp", 1, 7000), HU, XDP_REDIRECT, "KERNEL_REDIRECT")
endpoint(HA, ID_A, MAC["a_pod"], MAC["a_host"], flags=1)  # ENDPOINT_F_KERNEL_MODE
check("kernel mode endpoint: in-kernel policy despite the socket", v4(A4, B4, "tcp", 1, 81), HA, XDP_DROP, "POLICY_DENIED")
check("kernel mode endpoint: allowed redirect", v4(A4, B4, "tcp", 1, 80), HA, XDP_REDIRECT, "KERNEL_REDIRECT",
      want_frame=B_MACS + v4(A4, B4, "tcp", 1, 80)[12:])
endpoint(HA, ID_A, MAC["a_pod"], MAC["a_host"])
sock.close()  # the kernel removes a closed socket from the XSKMAP
check("socket closed: back to the in-kernel path (its pair still in the steer cache)", v4(A4, B4, "tcp", 1, 81), HA,
      XDP_DROP, "POLICY_DENIED")
check("fc socket: socket closed: the cached allow applies again", fs_allow, HA, XDP_REDIRECT, "KERNEL_REDIRECT",
      want_frame=B_MACS + fs_allow[12:])
check("fc socket: socket closed: the cached drop applies again", fs_deny, HA, XDP_DROP, "POLICY_DENIED")

# redirect failure: endpoint without a devmap entry
map_delete("redirect_devmap", struct.pack("<I", HB))
f = v4(A4, B4, "tcp", 1, 80)
check("redirect failure passes the frame unmodified", f, HA, XDP_PASS, "REDIRECT_FAILED", want_frame=f)
map_update("redirect_devmap", struct.pack("<I", HB), devmap_val(HB))

# event rate limit: 3 per second per CPU. One bpftool call with `repeat 10` runs on one CPU within
# microseconds: 3 events written, 7 lost (a refill needs 333 ms).
import time
config(0, events_per_sec=3)
time.sleep(1.1)  # every CPU's bucket starts full again
lost_before = counters()[CNT["EVENTS_LOST"]]
read_events()
run(v4(A4, B4, "tcp", 1, 81), HA, repeat=10)
written = len(read_events())
lost = counters()[CNT["EVENTS_LOST"]] - lost_before
ok = written == 3 and lost == 7
print(("ok   " if ok else "FAIL ") + f"rate limit 3/s: {written} written, {lost} lost of 10")
if not ok:
    FAILS.append("rate limit")
config(0, events_per_sec=0)
before = counters()[CNT["EVENTS_LOST"]]
run(v4(A4, B4, "tcp", 1, 81), HA)
ok = not read_events() and counters()[CNT["EVENTS_LOST"]] == before
print(("ok   " if ok else "FAIL ") + "events_per_sec 0 disables events without counting them lost")
if not ok:
    FAILS.append("events disabled")

total = sum(c for i, c in enumerate(counters()) if i != CNT["EVENTS_LOST"])
ok = total == RUNS
print(("ok   " if ok else "FAIL ") + f"counter slots sum to frames run: {total} == {RUNS}")
if not ok:
    FAILS.append("sum")
print(f"{len(FAILS)} failed" if FAILS else "all passed")
sys.exit(1 if FAILS else 0)
