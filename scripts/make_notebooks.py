"""Writes the Colab notebooks in notebooks/ from the cell sources below (run after editing them).

Each notebook's first code cell holds its settings (the test suite replaces it with tiny ones and
executes the notebook on CPU). Usage: python scripts/make_notebooks.py
"""

import pathlib

import nbformat

OUT = pathlib.Path(__file__).resolve().parents[1] / "notebooks"

INSTALL = '''# On Colab (TPU or GPU runtime): install prottrans-jax from your copy of this repository first.
REPO_URL = ""  # e.g. the git URL of your prottrans-jax repository
import sys
if "google.colab" in sys.modules and REPO_URL:
    !git clone -q {REPO_URL} prottrans-jax && pip install -q "torch==2.13.0" -e ./prottrans-jax
import os
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import jax
print(jax.devices())'''

NOTEBOOKS = {
    "embed_and_predict.ipynb": [
        ("md", "# Embed proteins and predict their secondary structure\n\nEmbeds a FASTA with a protein "
               "language model (any prottrans-jax training directory or HuggingFace folder, e.g. an `import-hf` "
               "of ProtT5-XL-U50), trains ProtTrans' secondary-structure CNN on NetSurfP-2.0 embeddings, and "
               "predicts 3- and 8-state secondary structure with probabilities."),
        ("code", INSTALL),
        ("code", '''# Settings
MODEL = "quickstart_run"          # a training directory, checkpoint folder or HF folder
DATA_DIR = "../shared/data"       # NetSurfP-2.0 CSVs under DATA_DIR/netsurfp/ (upload them on Colab)
WORK = "notebook_embed_predict"   # outputs
TRAIN_CHAINS = 2000               # NetSurfP training chains to embed (all: 10,792)
EPOCHS = 10'''),
        ("code", '''import pathlib
from prottrans_jax import embed
from prottrans_jax.downstream import datasets, inputs, residue_training, predict, heads_cli
work = pathlib.Path(WORK); work.mkdir(exist_ok=True)
query = work / "query.fasta"
query.write_text(">ubiquitin\\nMQIFVKTLTGKTITLEVEPSDTIENVKAKIQDKEGIPPDQQRLIFAGKQLEDGRTLSDYNIQKESTLHLVLRLRGG\\n"
                 ">insulin_B\\nFVNQHLCGSHLVEALYLVCGERGFFYTPKT\\n")
summary = embed.embed_fasta(MODEL, query, work / "query.h5", per_residue=True, per_protein=True)
print(summary.outputs, f"{summary.residues_per_second:.0f} residues/s")'''),
        ("code", '''import h5py
with h5py.File(work / "query.h5") as f:
    print(dict(f.attrs))
    for name in f:
        print(name, f[name].shape)'''),
        ("md", "## Train the secondary-structure head on embeddings of NetSurfP-2.0"),
        ("code", '''train = datasets.read_netsurfp_csv(pathlib.Path(DATA_DIR) / "netsurfp" / "Train_HHblits.csv.gz")[:TRAIN_CHAINS]
fasta = work / "train.fasta"
fasta.write_text("".join(f">{r.id}\\n{r.sequence}\\n" for r in train))
embed.embed_fasta(MODEL, fasta, work / "train.h5", per_residue=True, per_protein=False)
features = inputs.features_for(f"h5:{work / 'train.h5'}", [r.id for r in train], [r.sequence for r in train], True)
params, history = residue_training.train_residue_head(
    features, train, residue_training.TrainConfig(max_epochs=EPOCHS), out_dir=work / "ss_head")
import json
info = json.loads((work / "ss_head" / "head.json").read_text())
info.update(task="secondary-structure", head_name="cnn", features=f"h5:{work / 'train.h5'}")
(work / "ss_head" / "head.json").write_text(json.dumps(info))
history[-1]'''),
        ("md", "## Predict"),
        ("code", '''paths = predict.predict_fasta(query, [str(work / "ss_head")], work / "prediction", model=MODEL,
                              overwrite=True)  # re-running the cell replaces the prediction
result = json.loads(paths["json"].read_text())
for name, r in result.items():
    print(name)
    print("  ", r["sequence"])
    print("  ", r["dssp3"])'''),
    ],
    "pretrain_small.ipynb": [
        ("md", "# Pretrain a small ProtT5 and hand it to PyTorch\n\nTrains a ProtT5-style model on the "
               "denoising objective with the gin-configured trainer (on a TPU runtime it uses every core), "
               "exports it to a HuggingFace folder and checks that `transformers` computes the same embeddings."),
        ("code", INSTALL),
        ("code", '''# Settings
RUN = "notebook_pretrain"         # MODEL_DIR
GIN = "runs/prot_t5_tiny.gin"     # e.g. runs/prot_t5_xl.gin on a TPU pod slice
TASK = "demo_prot_t5_denoise"     # the shipped corpus; uniref50_prot_t5_denoise with your FASTA shards
STEPS = 200
BATCH = 16'''),
        ("code", '''from prottrans_jax import train
rc = train.main([f"--gin_file={GIN}", f"--gin.MODEL_DIR='{RUN}'", f"--gin.MIXTURE_OR_TASK_NAME='{TASK}'",
                 f"--gin.TRAIN_STEPS={STEPS}", f"--gin.BATCH_SIZE={BATCH}"])
assert rc == 0'''),
        ("md", "## Export to HuggingFace and compare with transformers (torch)"),
        ("code", '''from prottrans_jax import model_io
from prottrans_jax.hf import export
model = model_io.load_model(RUN)
hf_dir = export.export_model(model, RUN + "_hf", encoder_only=True, overwrite=True)
print(model.describe(), "->", hf_dir)'''),
        ("code", '''import numpy as np, torch, transformers
from prottrans_jax.downstream import encodings
seq = "MQIFVKTLTGKTITLEVEPSDTIENVKAKIQDKEGIPPDQQRLIFAGKQLEDGRTLSDYNIQKESTLHLVLRLRGG"
tok = transformers.T5Tokenizer.from_pretrained(hf_dir)
enc = transformers.T5EncoderModel.from_pretrained(hf_dir).eval()
with torch.no_grad():
    ref = enc(**tok(" ".join(seq), return_tensors="pt")).last_hidden_state[0, :len(seq)].numpy()
ours = encodings.model_features(model, [seq])[0]
print("max |difference|:", float(np.abs(ref - ours).max()))
assert np.abs(ref - ours).max() < 1e-4'''),
    ],
    "finetune_lora.ipynb": [
        ("md", "# Fine-tune a protein language model with LoRA for secondary structure\n\nLoRA of rank 4 on the "
               "attention projections (q, k, v, o) with trainable layer norms, as in ProtTrans' fine-tuning "
               "notebooks, plus ProtTrans' CNN head; the batch is split over every device of the runtime."),
        ("code", INSTALL),
        ("code", '''# Settings
MODEL = "quickstart_run"          # a training directory or HF folder (e.g. import-hf of ProtT5-XL-U50)
DATA_DIR = "../shared/data"
TRAIN_CHAINS = 500
MAX_LENGTH = 512
EPOCHS = 2
BATCH = 8'''),
        ("code", '''import pathlib, jax, jax.numpy as jnp, numpy as np, optax
from prottrans_jax import model_io
from prottrans_jax.downstream import datasets, finetune, metrics
from prottrans_jax.models.heads import SecondaryStructureCNN
data = pathlib.Path(DATA_DIR) / "netsurfp"
train = [r for r in datasets.read_netsurfp_csv(data / "Train_HHblits.csv.gz") if len(r.sequence) <= MAX_LENGTH]
train = train[:TRAIN_CHAINS]
test = [r for r in datasets.read_netsurfp_csv(data / "CB513_HHblits.csv") if len(r.sequence) <= MAX_LENGTH][:100]

def loss(out, labels, mask):
    w = mask * labels["resolved"]
    ce = optax.softmax_cross_entropy_with_integer_labels
    return (jnp.sum(ce(out["dssp3"], labels["dssp3"]) * w) + jnp.sum(ce(out["dssp8"], labels["dssp8"]) * w)) / jnp.maximum(w.sum(), 1)

def make_labels(idx, rows, length):
    out = {k: np.zeros((rows, length), np.int32) for k in ("dssp3", "dssp8")}
    out["resolved"] = np.zeros((rows, length), np.float32)
    for j, i in enumerate(idx):
        n = len(train[i].sequence)
        out["dssp3"][j, :n], out["dssp8"][j, :n], out["resolved"][j, :n] = train[i].dssp3, train[i].dssp8, train[i].resolved
    return out

tuner = finetune.Finetuner(model_io.load_model(MODEL), SecondaryStructureCNN(), loss,
                           finetune.FinetuneConfig(mode="lora", rank=4, learning_rate=3e-4, batch_size=BATCH))
print("trainable parameters:", tuner.trainable_count())'''),
        ("code", '''for epoch in range(EPOCHS):
    losses = tuner.train_epoch([r.sequence for r in train], make_labels, np.random.default_rng(epoch), jax.random.key(epoch))
    print(f"epoch {epoch + 1}: loss {np.mean(losses):.4f}")'''),
        ("code", '''probs = tuner.predict([r.sequence for r in test])
scores = metrics.residue_scores([(r.dssp3, p["dssp3"].argmax(-1), r.evaluate) for r, p in zip(test, probs)], list("HEC"))
print(f"CB513 (first {len(test)} chains) Q3 = {100 * scores['accuracy']:.1f} +- {100 * scores['se']:.1f}")'''),
    ],
}


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name, cells in NOTEBOOKS.items():
        nb = nbformat.v4.new_notebook()
        nb.metadata.update({"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                            "accelerator": "TPU", "colab": {"provenance": []}})
        nb.cells = [nbformat.v4.new_markdown_cell(src) if kind == "md" else nbformat.v4.new_code_cell(src)
                    for kind, src in cells]
        nbformat.write(nb, OUT / name)
        print("wrote", OUT / name)


if __name__ == "__main__":
    main()
