"""LSC4Rec as a RecBole model: the cloud's LLM and the device's SRM, built side by side.

The class is what ``--model=LSC4Rec`` names: its config holds LLMRec's keys
(``base_config_models``) and the SRM gets a config of its own (``srm_config_of``). It owns no
forward pass; the experiment (:mod:`recbole_lsc.experiment.lsc4rec`) trains and evaluates the
two halves, which only meet through candidate lists (:mod:`recbole_lsc.channel`).
"""

from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType

from recbole_lsc.cloud.llmrec import LLMRec
from recbole_lsc.device.srm import DeviceSRM
from recbole_lsc.errors import ConfigError


class LSC4Rec(SequentialRecommender):
    r"""LSC4Rec: the cloud's LLM (:class:`LLMRec`) and the device's SRM (:class:`DeviceSRM`) side
    by side; trained and evaluated by :class:`~recbole_lsc.experiment.lsc4rec.LSC4RecTrainer`.

    Reference:
        Lv et al. "Collaboration of Large Language Models and Small Recommendation Models for
        Device-Cloud Recommendation." in KDD 2025.
    """

    input_type = InputType.POINTWISE
    base_config_models = ("LLMRec",)

    def __init__(self, config, dataset, srm_class, srm_config):
        super().__init__(config, dataset)
        _check_candidate_num(config, self.n_items - 1)
        # order matters for reproducibility: the LLM's weights are drawn first, then the SRM's
        self.llm = LLMRec(config, dataset)
        self.srm = DeviceSRM(srm_class(srm_config, dataset), srm_config, dataset)


def _check_candidate_num(config, catalogue):
    """Refuse, before any training, candidate lists longer than what the LLM can propose."""
    masked = config["llm_max_len"] if config["llm_mask_history"] else 0
    limit = catalogue - masked
    if config["candidate_num"] > limit:
        why = f" minus the up to {masked} history items llm_mask_history removes" if masked else ""
        raise ConfigError(
            f"candidate_num ({config['candidate_num']}) is larger than the catalogue of {catalogue} items{why}; "
            f"set candidate_num to at most {limit}"
        )
    if "full" in config["device_catalogue"] and 2 * config["candidate_num"] > catalogue:
        raise ConfigError(
            f"device_catalogue 'full' adds the device's own top-C to the cloud's C candidates, but the catalogue has "
            f"only {catalogue} items; set candidate_num to at most {catalogue // 2} or device_catalogue: candidates"
        )
