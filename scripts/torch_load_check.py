"""Load a gencluster safetensors export into ../shared/anchors/torch_ref.py's
model with load_state_dict(strict=True) and print its test loss as JSON.
Usage: PYTHONPATH=../shared/anchors MNIST_DIR=dataset/mnistdata \
       /usr/bin/python3 scripts/torch_load_check.py MODEL FILE.safetensors
Reads safetensors with the standard library only (no safetensors package)."""
import json, struct, sys
import numpy as np, torch
import torch_ref

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
    net = torch_ref.PixelCNN() if model == "pixelcnn" else torch_ref.VAE()
    net.load_state_dict(read_safetensors(path), strict=True)
    te = torch.from_numpy((torch_ref.load("t10k-images-idx3-ubyte.gz") > 127).astype(np.float32))
    with torch.no_grad():
        tot = sum(net.loss(te[k:k+500]).item() * 500 for k in range(0, 10000, 500)) / 10000
    print(json.dumps({"model": model, "test_nats": tot}))

main()
