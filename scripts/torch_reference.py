"""The PyTorch side of the comparisons in docs/BENCHMARKS.md.

It builds gencluster's models in PyTorch, layer for layer and with the
parameter names and layouts `gencluster export` writes (so an exported file
loads with load_state_dict(strict=True)), and measures them the way the
gencluster side of each comparison is measured:

  torch_reference.py compute MODEL BATCH STEPS THREADS
      training images/s: 3 untimed warm-up steps, then STEPS timed steps
      (batch assembly, forward, backward, Adam), wall clock (perf_counter)
  torch_reference.py quality MODEL BATCH EPOCHS THREADS
      Adam (lr 1e-3) for EPOCHS passes over the training set (a new random
      order each pass, the last partial batch dropped), then the mean test
      loss in nats per image over the 10,000 test images, batches of 500
  torch_reference.py allreduce WORLD MIB ITERS
      WORLD processes (torch.distributed, gloo, loopback, 1 thread each)
      sum MIB MiB of float32: 2 warm-up runs, then ITERS runs, each after a
      barrier; rank 0's median seconds
  torch_reference.py sample N THREADS [PIXELS]
      the plain PixelCNN sampler: the whole network over the N images
      once per pixel, in raster order (no caching); times the first PIXELS
      pixels (default all 784) after one untimed pass and prints the
      seconds per pass and the time for all 784 extrapolated from them

MODEL is pixelcnn, vae, pixelrnn or ae, and pixelcnn/256 or pixelrnn/256 for
the 256-level models (--levels 256: grey levels in [0,1] in, a 256-way softmax
per pixel out); THREADS goes to torch.set_num_threads. Data: the IDX files in
$MNIST_DIR (default: this repository's dataset/mnistdata, the files the
gencluster binary embeds), binarised at 0.5 (byte > 127 is 1), or as grey
levels byte/255 for ae and the 256-level models. For ae, quality also fits the
linear probe (logistic regression 20 -> 10 on the codes of the training set,
Adam lr 1e-2, 20 epochs, batch 256) and prints its test accuracy, as
`gencluster eval --probe` does. Every run seeds torch with 0. Run it with
Debian's PyTorch:
    apt-get install python3-torch libopenblas0-pthread
    /usr/bin/python3 scripts/torch_reference.py compute pixelcnn 32 20 2
"""
import gzip
import os
import socket
import statistics
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.environ.get("MNIST_DIR") or os.path.join(HERE, "..", "dataset", "mnistdata")
PIXELS = 28 * 28


def _idx(split, kind):
    stem = os.path.join(DATA, ("train" if split == "train" else "t10k") + f"-{kind}")
    return gzip.open(stem + ".gz") if os.path.exists(stem + ".gz") else open(stem, "rb")


def images(split, grey=False):
    """The split's images as float32 0/1 (grey: byte/255), shape [N, 1, 28, 28]."""
    with _idx(split, "images-idx3-ubyte") as f:
        magic, n, rows, cols = struct.unpack(">4I", f.read(16))
        assert magic == 0x803, f"{split}: not an IDX image file"
        raw = np.frombuffer(f.read(n * rows * cols), np.uint8).reshape(n, 1, rows, cols)
    if grey:
        return torch.from_numpy(raw.astype(np.float32) / np.float32(255))
    return torch.from_numpy((raw > 127).astype(np.float32))


def labels(split):
    """The split's labels as int64, shape [N]."""
    with _idx(split, "labels-idx1-ubyte") as f:
        magic, n = struct.unpack(">2I", f.read(8))
        assert magic == 0x801, f"{split}: not an IDX label file"
        return torch.from_numpy(np.frombuffer(f.read(n), np.uint8).astype(np.int64))


def pixel_loss(logits, x, levels):
    """Summed NLL per image: Bernoulli logits against 0/1 pixels (levels 2),
    or 256-way softmax logits [B, 256, H, W] against the grey levels x*255."""
    if levels == 2:
        return F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / len(x)
    target = (x[:, 0] * 255).round().long()
    return F.cross_entropy(logits, target, reduction="sum") / len(x)


class MaskedConv2d(nn.Conv2d):
    """A k x k convolution that sees only pixels before the centre in raster
    order: rows above it, and on its row the columns left of it (mask A) or
    up to and including it (mask B). The mask is a buffer of the weight's
    shape, named `mask`, as in gencluster's export."""

    def __init__(self, kind, cin, cout, k):
        super().__init__(cin, cout, k, padding=k // 2)
        c = k // 2
        allowed = torch.zeros(k, k)
        allowed[:c, :] = 1
        allowed[c, : c + (1 if kind == "B" else 0)] = 1
        self.register_buffer("mask", allowed.expand_as(self.weight).clone())

    def forward(self, x):
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


class PixelCNN(nn.Module):
    """7x7 mask-A conv 1->64; 6 x [ReLU, 3x3 mask-B conv 64->64]; ReLU, 1x1
    conv 64->64, ReLU, 1x1 conv 64->1: a Bernoulli logit per pixel (levels
    2), or 1x1 conv 64->256: a softmax over the grey levels (levels 256).
    Loss: the NLL summed over the pixels, per image (nats)."""

    def __init__(self, width=64, blocks=6, levels=2):
        super().__init__()
        self.levels = levels
        self.a = MaskedConv2d("A", 1, width, 7)
        self.bs = nn.ModuleList(MaskedConv2d("B", width, width, 3) for _ in range(blocks))
        self.o1 = nn.Conv2d(width, width, 1)
        self.o2 = nn.Conv2d(width, 1 if levels == 2 else 256, 1)

    def loss(self, x):
        h = self.a(x)
        for conv in self.bs:
            h = conv(torch.relu(h))
        logits = self.o2(torch.relu(self.o1(torch.relu(h))))
        return pixel_loss(logits, x, self.levels)


class PixelRNN(nn.Module):
    """The 2-D LSTM of the lecture: u = 7x7 mask-A conv 1->H of the image;
    h(r,c), c(r,c) from [u(r,c), h(r,c-1), h(r-1,c)] by one Linear 3H -> 5H
    (gates i, f_left, f_up, o, g), computed one anti-diagonal r+c at a time
    from the top-left corner, zero state outside the image:
        c = sig(f_left) c(r,c-1) + sig(f_up) c(r-1,c) + sig(i) tanh(g),
        h = sig(o) tanh(c).
    Head: ReLU, 1x1 conv H->H, ReLU, 1x1 conv H->1 (levels 2) or H->256."""

    def __init__(self, hidden=64, levels=2):
        super().__init__()
        self.levels, self.hidden = levels, hidden
        self.inp = MaskedConv2d("A", 1, hidden, 7)
        self.cell = nn.Linear(3 * hidden, 5 * hidden)
        self.o1 = nn.Conv2d(hidden, hidden, 1)
        self.o2 = nn.Conv2d(hidden, 1 if levels == 2 else 256, 1)

    def states(self, x):
        b, _, rows, cols = x.shape
        hid = self.hidden
        u = self.inp(x)  # [B, H, rows, cols]
        zero = x.new_zeros(b, 1, hid)
        # The previous diagonal's h and c, indexed by row (zero where that
        # diagonal has no position): (r, k-1) is its row r, (r-1, k) its row r-1.
        h_prev = c_prev = x.new_zeros(b, rows, hid)
        per_diag = []
        for d in range(rows + cols - 1):
            r = torch.arange(max(0, d - cols + 1), min(d, rows - 1) + 1)
            ud = u[:, :, r, d - r].transpose(1, 2)  # [B, len, H]
            left_h, left_c = h_prev[:, r], c_prev[:, r]
            up_h, up_c = torch.cat([zero, h_prev], 1)[:, r], torch.cat([zero, c_prev], 1)[:, r]
            i, fl, fu, o, g = self.cell(torch.cat([ud, left_h, up_h], 2)).chunk(5, 2)
            cd = torch.sigmoid(fl) * left_c + torch.sigmoid(fu) * up_c + torch.sigmoid(i) * torch.tanh(g)
            hd = torch.sigmoid(o) * torch.tanh(cd)
            h_prev = x.new_zeros(b, rows, hid).index_copy(1, r, hd)
            c_prev = x.new_zeros(b, rows, hid).index_copy(1, r, cd)
            per_diag.append(h_prev)
        states = torch.stack(per_diag, 1)  # [B, diagonals, rows, H]
        rr = torch.arange(rows).view(rows, 1).expand(rows, cols)
        cc = torch.arange(cols).view(1, cols).expand(rows, cols)
        return states[:, rr + cc, rr].permute(0, 3, 1, 2)  # [B, H, rows, cols]

    def loss(self, x):
        logits = self.o2(torch.relu(self.o1(torch.relu(self.states(x)))))
        return pixel_loss(logits, x, self.levels)


class AE(nn.Module):
    """The regular autoencoder: 784-400 (ReLU)-20, 20-400 (ReLU)-784 with a
    sigmoid; loss: squared error summed over the pixels (grey levels in
    [0,1]), per image."""

    def __init__(self):
        super().__init__()
        self.e1, self.e2 = nn.Linear(PIXELS, 400), nn.Linear(400, 20)
        self.d1, self.d2 = nn.Linear(20, 400), nn.Linear(400, PIXELS)

    def encode(self, x):
        return self.e2(torch.relu(self.e1(x.reshape(len(x), PIXELS))))

    def loss(self, x):
        r = torch.sigmoid(self.d2(torch.relu(self.d1(self.encode(x)))))
        return ((r - x.reshape(len(x), PIXELS)) ** 2).sum() / len(x)


class VAE(nn.Module):
    """Encoder 784-400 (ReLU) -> mean (20) and log-variance (20); decoder
    20-400 (ReLU) -> 784 Bernoulli logits. Loss: the negative ELBO with one
    noise sample per image (reconstruction BCE + KL to N(0, I)), per image."""

    def __init__(self):
        super().__init__()
        self.e = nn.Linear(PIXELS, 400)
        self.mu = nn.Linear(400, 20)
        self.lv = nn.Linear(400, 20)
        self.d1 = nn.Linear(20, 400)
        self.d2 = nn.Linear(400, PIXELS)

    def loss(self, x):
        x = x.reshape(len(x), PIXELS)
        h = torch.relu(self.e(x))
        mean, logvar = self.mu(h), self.lv(h)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        logits = self.d2(torch.relu(self.d1(z)))
        rec = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
        kl = 0.5 * torch.sum(mean * mean + logvar.exp() - 1 - logvar)
        return (rec + kl) / len(x)


def build(model):
    """The model MODEL names (pixelcnn, vae, pixelrnn, ae, pixelcnn/256, pixelrnn/256)."""
    name, _, lv = model.partition("/")
    levels = int(lv) if lv else 2
    if levels not in (2, 256) or (levels == 256 and name not in ("pixelcnn", "pixelrnn")):
        sys.exit(f"model {model!r}: /256 is for pixelcnn and pixelrnn")
    if name == "pixelcnn":
        return PixelCNN(levels=levels)
    if name == "pixelrnn":
        return PixelRNN(levels=levels)
    if name == "vae":
        return VAE()
    if name == "ae":
        return AE()
    sys.exit(f"unknown model {model!r}: pixelcnn, vae, pixelrnn or ae (pixelcnn/256, pixelrnn/256)")


def grey(model):
    """Whether MODEL takes grey levels rather than binarised pixels."""
    return model == "ae" or model.endswith("/256")


def probe(net):
    """Test accuracy of a linear probe on the autoencoder's codes."""
    with torch.no_grad():
        ztr, zte = net.encode(images("train", True)), net.encode(images("test", True))
    ytr, yte = labels("train"), labels("test")
    lin = nn.Linear(ztr.shape[1], 10)
    opt = torch.optim.Adam(lin.parameters(), lr=1e-2)
    for _ in range(20):
        order = torch.randperm(len(ztr))
        for i in range(0, len(ztr), 256):
            idx = order[i:i + 256]
            opt.zero_grad()
            F.cross_entropy(lin(ztr[idx]), ytr[idx]).backward()
            opt.step()
    with torch.no_grad():
        return (lin(zte).argmax(1) == yte).float().mean().item()


def test_loss(net, data):
    """Mean loss per image over data, 500 images at a time, no gradients."""
    with torch.no_grad():
        return sum(net.loss(data[i:i + 500]).item() * len(data[i:i + 500]) for i in range(0, len(data), 500)) / len(data)


def compute(model, batch, steps, threads):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    train = images("train", grey(model))
    net = build(model)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    order = torch.randperm(len(train))
    span = len(train) - batch

    def step(i):
        start = (i * batch) % span  # consecutive windows of one random order
        opt.zero_grad()
        loss = net.loss(train[order[start:start + batch]])
        loss.backward()
        opt.step()
        return loss.item()

    for i in range(3):
        step(i)
    t0 = time.perf_counter()
    loss = 0.0
    for i in range(3, 3 + steps):
        loss = step(i)
    dt = time.perf_counter() - t0
    print(f"{model} batch={batch} steps={steps} threads={threads} images_per_s={batch * steps / dt:.1f} loss={loss:.2f}")


def quality(model, batch, epochs, threads):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    train, test = images("train", grey(model)), images("test", grey(model))
    net = build(model)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    total = int(epochs * len(train) / batch)
    done, t0 = 0, time.time()
    while done < total:
        order = torch.randperm(len(train))
        for start in range(0, len(train) - batch + 1, batch):
            if done == total:
                break
            opt.zero_grad()
            loss = net.loss(train[order[start:start + batch]])
            loss.backward()
            opt.step()
            done += 1
            if done % 500 == 0:
                print(f"step {done}/{total} loss {loss.item():.2f} t={time.time() - t0:.0f}s", flush=True)
    train_s = time.time() - t0
    nats = test_loss(net, test)
    if model == "ae":
        print(f"{model} epochs={epochs} batch={batch} steps={total} train_s={train_s:.0f} "
              f"test_l2={nats:.3f} probe_accuracy={probe(net):.4f}")
        return
    print(f"{model} epochs={epochs} batch={batch} steps={total} train_s={train_s:.0f} "
          f"test_nats={nats:.2f} bits_per_dim={nats / (PIXELS * np.log(2)):.4f}")


def _allreduce_member(rank, world, mib, iters, port):
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    buf = torch.ones(mib * (1 << 20) // 4)
    for _ in range(2):
        dist.all_reduce(buf)
    times = []
    for _ in range(iters):
        dist.barrier()
        t0 = time.perf_counter()
        dist.all_reduce(buf)
        times.append(time.perf_counter() - t0)
    if rank == 0:
        t, size = statistics.median(times), mib * (1 << 20)
        print(f"gloo world={world} MiB={mib} median_s={t:.4f} algbw_MBps={size / t / 1e6:.0f} "
              f"busbw_MBps={2 * (world - 1) / world * size / t / 1e6:.0f}")
    dist.destroy_process_group()


def allreduce(world, mib, iters):
    import torch.multiprocessing as mp
    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_allreduce_member, args=(world, mib, iters, port), nprocs=world)


def _ddp_member(rank, world, model, batch, steps, port, out):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.manual_seed(0)
    train = images("train", grey(model))
    net = build(model)

    class LossOf(nn.Module):  # DDP hooks the module's forward: let it be the loss
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net.loss(x)

    ddp = DDP(LossOf(net))  # default bucket_cap_mb
    opt = torch.optim.Adam(ddp.parameters(), lr=1e-3)
    order = torch.randperm(len(train))  # same seed: the same order on every rank
    span = len(train) - batch
    lo, hi = rank * batch // world, (rank + 1) * batch // world

    def step(i):
        start = (i * batch) % span
        opt.zero_grad()
        # Each rank's loss is the mean over its share and DDP averages the
        # gradients over the ranks: the step is one process's on the batch.
        loss = ddp(train[order[start:start + batch]][lo:hi])
        loss.backward()
        opt.step()

    for i in range(3):
        step(i)
    dist.barrier()
    t0 = time.perf_counter()
    for i in range(3, 3 + steps):
        step(i)
    dist.barrier()
    dt = time.perf_counter() - t0
    if rank == 0:
        out.put(batch * steps / dt)
    dist.destroy_process_group()


def ddp(model, batch, steps, world):
    """Data-parallel training with DistributedDataParallel over gloo on
    loopback: world processes of one thread each, the global batch split
    among them (as gencluster local --workers WORLD --threads 1)."""
    import torch.multiprocessing as mp
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = ctx.SimpleQueue()
    mp.start_processes(_ddp_member, args=(world, model, batch, steps, port, out), nprocs=world, start_method="spawn")
    print(f"ddp {model} batch={batch} steps={steps} world={world} threads=1 images_per_s={out.get():.1f}")


def sample(n, threads, pixels):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = PixelCNN().eval()
    x = torch.zeros(n, 1, 28, 28)

    def logits(x):
        h = net.a(x)
        for conv in net.bs:
            h = conv(torch.relu(h))
        return net.o2(torch.relu(net.o1(torch.relu(h))))

    with torch.no_grad():
        logits(x)  # untimed
        start = time.perf_counter()
        for i in range(pixels):
            r, c = divmod(i, 28)
            p = torch.sigmoid(logits(x)[:, 0, r, c])
            x[:, 0, r, c] = (torch.rand(n) < p).float()
        took = time.perf_counter() - start
    per_pass = took / pixels
    print(f"sample n={n} threads={threads} pixels={pixels} pass_s={per_pass:.5f} total_s={per_pass * PIXELS:.2f} "
          f"samples_per_s={n / (per_pass * PIXELS):.3f}")


def main(argv):
    usage = ("usage: torch_reference.py compute|quality MODEL BATCH STEPS|EPOCHS THREADS, "
             "allreduce WORLD MIB ITERS, ddp MODEL BATCH STEPS WORLD, or sample N THREADS [PIXELS]")
    if len(argv) < 3:
        sys.exit(usage)
    what, args = argv[0], argv[1:]
    if what == "sample" and len(args) in (2, 3):
        sample(int(args[0]), int(args[1]), int(args[2]) if len(args) == 3 else PIXELS)
    elif len(argv) < 4:
        sys.exit(usage)
    elif what == "compute" and len(args) == 4:
        compute(args[0], int(args[1]), int(args[2]), int(args[3]))
    elif what == "quality" and len(args) == 4:
        quality(args[0], int(args[1]), float(args[2]), int(args[3]))
    elif what == "ddp" and len(args) == 4:
        ddp(args[0], int(args[1]), int(args[2]), int(args[3]))
    elif what == "allreduce" and len(args) == 3:
        allreduce(int(args[0]), int(args[1]), int(args[2]))
    else:
        sys.exit(usage)


if __name__ == "__main__":
    main(sys.argv[1:])
