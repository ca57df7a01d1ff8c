"""Load a gencluster safetensors export into scripts/torch_reference.py's
model with load_state_dict(strict=True) and print its test loss as JSON.
Usage: /usr/bin/python3 scripts/torch_load_check.py MODEL FILE.safetensors
(MODEL as torch_reference.py takes it: pixelcnn, vae, pixelrnn, ae,
pixelcnn/256, pixelrnn/256.)
($MNIST_DIR as for torch_reference.py: default dataset/mnistdata.)
Reads safetensors with the standard library only (no safetensors package)."""
import json, struct, sys
import numpy as np, torch
sys.dont_write_bytecode = True  # no __pycache__ in scripts/
import torch_reference

def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        assert e["dtype"] == "F32", name
        lo, hi = e["data_offsets"]
        out[name] = torch.from_numpy(np.frombuffer(data[lo:hi], dtype="<f4").copy()).reshape(e["shape"])
    return out

def main():
    model, path = sys.argv[1], sys.argv[2]
    torch.manual_seed(0)
    net = torch_reference.build(model)
    net.load_state_dict(read_safetensors(path), strict=True)
    tot = torch_reference.test_loss(net, torch_reference.images("test", torch_reference.grey(model)))
    print(json.dumps({"model": model, "test_nats": tot}))

main()
