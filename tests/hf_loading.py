"""Test helper: load an exported folder with transformers and insist that every tensor was used and none missing."""


def load_clean(model_cls, folder, **kwargs):
    """``model_cls.from_pretrained(folder)`` with no missing, unexpected or mismatched keys, in eval mode."""
    model, info = model_cls.from_pretrained(folder, output_loading_info=True, **kwargs)
    problems = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    assert not problems, f"{model_cls.__name__} from {folder}: {problems}"
    return model.eval()
