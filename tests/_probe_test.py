from test_reliability import *  # noqa
from test_reliability import _upstream  # noqa

def test_probe(reference):
    ps = all_points(reference)
    print("\nPOINTS", len(ps), sum(p.restore for p in ps))
    for p in ps[::7]: print("  ", p.name)
    for which in ("mid-longhorn-apply", "mid-push-before-receive-pack", "mid-restore-bundle-push"):
        p = DEFAULT_POINTS[which](ps)
        extra = ("--restore", str(reference.archive)) if p.restore else ()
        h = reference.homelab("probe")
        r = p.rule(); first = h.bootstrap(*extra, rule=r)
        print("\n==", which, p.name, "fired", r.fired, "killed", first.killed, first.code)
        print(first.err[-300:])
        again = h.bootstrap(*extra)
        print("-- rerun", again.code, again.err[-500:])
        h.stop()
    for seed in (1, 2, 3):
        print(faulty_bootstrap(reference, seed))
