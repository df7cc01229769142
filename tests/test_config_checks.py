"""Config checks shared by the codec and TTS configs (dmtts.config.check_choice): one message
shape for a value outside its choices, naming the key, the value and every allowed value."""

import pytest

from dmtts.config import check_choice
from dmtts.errors import DmttsError


def test_a_value_outside_its_choices_names_the_key_the_value_and_every_choice():
    check_choice("loss.adversarial", "hinge", ("hinge", "lsgan"))  # allowed: no error
    with pytest.raises(DmttsError) as e:
        check_choice("loss.adversarial", "wgan", ("hinge", "lsgan"))
    assert str(e.value) == "loss.adversarial 'wgan' must be 'hinge' or 'lsgan'"
    with pytest.raises(DmttsError) as e:
        check_choice("distill.combine", "mean", {"half": "paper eq. 13", "sum": "public code"})
    assert str(e.value) == "distill.combine 'mean' must be 'half' (paper eq. 13) or 'sum' (public code)"
    with pytest.raises(DmttsError) as e:
        check_choice("k", "x", ("a", "b", "c"))
    assert str(e.value) == "k 'x' must be 'a', 'b' or 'c'"


def test_codec_and_tts_configs_reject_a_bad_choice_with_the_same_message_shape():
    from dmtts.codec.config import training_config, validate as validate_codec
    from dmtts.tts.config import TTSTrainConfig, resolve_model_config, validate as validate_tts

    cfg = training_config("paper")
    validate_codec(cfg)
    cfg.train.scheduler = "step"
    with pytest.raises(DmttsError, match="^train.scheduler 'step' must be 'exponential' or 'cosine'$"):
        validate_codec(cfg)

    tts = TTSTrainConfig()
    validate_tts(tts)
    tts.training.dtype = "float16"
    with pytest.raises(DmttsError, match="^training.dtype 'float16' must be 'float32' or 'bfloat16'$"):
        validate_tts(tts)
    tts = TTSTrainConfig(model_preset="huge")
    with pytest.raises(DmttsError, match="^model_preset 'huge' must be 'paper', 'small' or 'tiny'$"):
        resolve_model_config(tts)  # checked before the model config is built
    tts = TTSTrainConfig()
    tts.data.prompt_min_frac = 0.6
    with pytest.raises(DmttsError, match="prompt_min_frac <= prompt_max_frac"):
        validate_tts(tts)
