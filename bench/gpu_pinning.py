# Runs on the GPU machine (`python3 bench/gpu_pinning.py [THREADS]`, default 16): how long
# page-locking 6.2 GiB of host memory takes by several routes (the driver's page-locked
# allocations, or ordinary memory registered with it), and reading a file from the page cache
# into it. Prints one JSON line per measurement.
import ctypes, glob, json, mmap, os, sys, time
from concurrent.futures import ThreadPoolExecutor
import nvidia
lib = os.path.join(list(nvidia.__path__)[0], "cu13", "lib")
rt = ctypes.CDLL(glob.glob(lib + "/libcudart.so.13*")[0])
rt.cudaHostAlloc.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t, ctypes.c_uint]
rt.cudaFreeHost.argtypes = [ctypes.c_void_p]
rt.cudaHostRegister.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint]
rt.cudaHostUnregister.argtypes = [ctypes.c_void_p]
rt.cudaFree(None)  # context
TOTAL = int(6.2 * 2**30)
UNITS = 124
CHUNK = TOTAL // UNITS // 4096 * 4096
THREADS = int(sys.argv[1]) if len(sys.argv) > 1 else 16
def out(**kw): print(json.dumps(kw), flush=True)

def alloc(_):
    p = ctypes.c_void_p()
    assert rt.cudaHostAlloc(ctypes.byref(p), CHUNK, 0) == 0
    return p.value
def free_all(ptrs):
    t = time.time(); [rt.cudaFreeHost(ctypes.c_void_p(p)) for p in ptrs]; return time.time() - t

t = time.time(); ptrs = [alloc(i) for i in range(UNITS)]; a = time.time() - t
out(route="cudaHostAlloc per unit, serial", alloc_s=a, free_s=free_all(ptrs))
with ThreadPoolExecutor(THREADS) as pool:
    t = time.time(); ptrs = list(pool.map(alloc, range(UNITS))); a = time.time() - t
out(route=f"cudaHostAlloc per unit, {THREADS} threads", alloc_s=a, free_s=free_all(ptrs))
p = ctypes.c_void_p(); t = time.time(); assert rt.cudaHostAlloc(ctypes.byref(p), CHUNK * UNITS, 0) == 0; a = time.time() - t
t = time.time(); rt.cudaFreeHost(p); out(route="cudaHostAlloc, one piece", alloc_s=a, free_s=time.time() - t)

# The file the units are read from, in the page cache.
path = "/tmp/pinning.bin"
with open(path, "wb") as f:
    block = os.urandom(64 << 20)
    for _ in range(CHUNK * UNITS // len(block) + 1): f.write(block)
with open(path, "rb") as f:
    while f.read(1 << 26): pass
fd = os.open(path, os.O_RDONLY)

def read_into(ptr, index):
    buf = (ctypes.c_char * CHUNK).from_address(ptr)
    n = os.preadv(fd, [memoryview(buf).cast("B")], index * CHUNK)
    assert n == CHUNK

# Route A, as now: alloc pinned then read, per unit in parallel.
def a_unit(i):
    p = alloc(i); read_into(p, i); return p
with ThreadPoolExecutor(THREADS) as pool:
    t = time.time(); ptrs = list(pool.map(a_unit, range(UNITS))); a = time.time() - t
out(route=f"alloc pinned + read, per unit, {THREADS} threads (as now)", total_s=a, free_s=free_all(ptrs))
# Read alone into pinned memory (already allocated).
with ThreadPoolExecutor(THREADS) as pool:
    ptrs = list(pool.map(alloc, range(UNITS)))
    t = time.time(); list(pool.map(lambda i: read_into(ptrs[i], i), range(UNITS))); a = time.time() - t
out(route=f"read into pinned memory alone, {THREADS} threads", read_s=a, gb_s=CHUNK * UNITS / a / 1e9, free_s=free_all(ptrs))

# Route B: anonymous memory read into in parallel, then registered.
maps = []
def b_unit(i):
    m = mmap.mmap(-1, CHUNK, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
    read_into(addr, i)
    return m, addr
with ThreadPoolExecutor(THREADS) as pool:
    t = time.time(); maps = list(pool.map(b_unit, range(UNITS))); r = time.time() - t
    t = time.time(); [rt.cudaHostRegister(ctypes.c_void_p(addr), CHUNK, 0) for _, addr in maps]; g = time.time() - t
    t2 = time.time(); [rt.cudaHostUnregister(ctypes.c_void_p(addr)) for _, addr in maps]; u = time.time() - t2
    t = time.time(); list(pool.map(lambda ma: rt.cudaHostRegister(ctypes.c_void_p(ma[1]), CHUNK, 0), maps)); gp = time.time() - t
    [rt.cudaHostUnregister(ctypes.c_void_p(addr)) for _, addr in maps]
out(route=f"mmap + read, {THREADS} threads, then cudaHostRegister", read_s=r, register_serial_s=g, register_parallel_s=gp, unregister_s=u)
# Route C: one anonymous region (with transparent huge pages or not), read in parallel,
# registered in one call.
def one_region(huge_pages):
    region = mmap.mmap(-1, CHUNK * UNITS, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if huge_pages:
        region.madvise(mmap.MADV_HUGEPAGE)
    base = ctypes.addressof(ctypes.c_char.from_buffer(region))
    with ThreadPoolExecutor(THREADS) as pool:
        t = time.time(); list(pool.map(lambda i: read_into(base + i * CHUNK, i), range(UNITS))); r = time.time() - t
    t = time.time(); assert rt.cudaHostRegister(ctypes.c_void_p(base), CHUNK * UNITS, 0) == 0; g = time.time() - t
    t = time.time(); rt.cudaHostUnregister(ctypes.c_void_p(base)); u = time.time() - t
    pages = " with MADV_HUGEPAGE" if huge_pages else ""
    out(route=f"one region{pages}, read in parallel, one cudaHostRegister", read_s=r, register_s=g, unregister_s=u)

one_region(False)
one_region(True)
out(thp=open("/sys/kernel/mm/transparent_hugepage/enabled").read().strip(), cpus=os.cpu_count())
