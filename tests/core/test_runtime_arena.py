"""ONNX Runtime sessions made side by side share one arena (a run times a dozen sessions together); a session made
on its own keeps its own arena, which goes with it (the shared one is never given back)."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = r"""
import numpy as np, onnx, onnxruntime as ort
from onnx import helper, TensorProto, numpy_helper
import gc
from slimship.core.memory import release_memory
from slimship.core.runtime import session, side_by_side

def rss_mb():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) // 1024

w = numpy_helper.from_array(np.full((16, 16, 3, 3), 0.01, np.float32), "w")
nodes = [helper.make_node("Conv", ["x", "w"], ["a"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["a"], ["b"]),
         helper.make_node("Conv", ["b", "w"], ["y"], pads=[1, 1, 1, 1])]
g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16, 64, 64])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 16, 64, 64])], [w])
model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 8
graph = model.SerializeToString()
x = np.ones((64, 16, 64, 64), np.float32)

def grow(make):
    keep, r0 = [], rss_mb()
    for _ in range(4):
        s = make()
        s(x)
        keep.append(s)
    return rss_mb() - r0, keep

def lone():  # one session at a time, as a run scores candidates: its memory goes with it
    r0 = rss_mb()
    for _ in range(2):
        s = session(graph, "onnxruntime", threads=1)
        s(x)
        del s
        gc.collect()
        release_memory()
    return rss_mb() - r0

kept = lone()
with side_by_side():
    shared, a = grow(lambda: session(graph, "onnxruntime", threads=1))
def own():
    so = ort.SessionOptions(); so.intra_op_num_threads = 1
    s = ort.InferenceSession(graph, so, providers=["CPUExecutionProvider"])
    return lambda b: s.run(None, {"x": b})[0]
separate, b = grow(own)
print(shared, separate, kept)
"""


def test_onnxruntime_sessions_share_one_arena():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True).stdout.split()
    shared, separate, kept = int(out[0]), int(out[1]), int(out[2])
    assert separate > 80  # four arenas, each holding a batch's activations (16 MB a tensor)
    assert shared < 0.5 * separate
    assert shared > 20  # the shared arena holds a batch's activations too ...
    assert kept < 0.5 * shared  # ... while a session made on its own gave its arena back
