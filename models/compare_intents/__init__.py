"""Which intent model, trained on which data? A comparison on one fixed split (issue 5).

Candidates are a model family × a training-data variant:

  families  logreg   the shipped one: TF-IDF over text_features → logistic regression
            charcnn  a character CNN (torch): embeddings → 2 convolutions → max+mean pool
            mlp      a one-hidden-layer network (torch) over the same TF-IDF features
  variants  written  the written utterances only
            asr-all  + every ASR transcript of them (intents/asr/train_asr.tsv)
            asr-cer  + the transcripts whose CER against their source sentence is ≤ T
            asr-w    + every transcript, each weighted W

T and W are chosen by sentence-grouped 5-fold cross-validation on the training data alone
(macro-F1 of the logreg family on the validation folds' ASR transcripts). Every model is
calibrated by a temperature fitted on its own out-of-fold training scores, exported to ONNX
and scored as the bot serves it (catalogue trigger rules, then the model) on the held-back
written sentences (intents/heldout.tsv) and on their ASR transcripts
(intents/asr/heldout_asr.tsv), which nothing here trains or tunes on. The winner is picked
by WINNER_RULE (FIRST_RULE, written down before any held-back figure was seen, is kept and
reported beside it; the revision and its reason are stated where the rules are defined).

Also: per-utterance latency (ONNX as served, and the training framework itself), and how
each model treats real Danish speech that is no municipal request (cached transcripts in
intents/asr/real_clips.tsv): all of it should end out_of_scope or below the confirm threshold.

Modules: data (pool, folds, held-back splits, variants, real clips), families (logreg) and
neural (char CNN, TF-IDF MLP), scoring (CV, held-back metrics, bootstrap, latency), rules
(the winner), report (the markdown section), run (the whole comparison and its command line).

    python -m models.compare_intents [--json] [--out FILE.md]
"""
