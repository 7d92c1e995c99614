"""How much of the clip budget the cut-layer messages carry, per setting.

  python scripts/message_energy.py --config=configs/bank_marketing.py:combined \
      --workdir=workdirs/bank_energy

Trains every run of the config's sweep grid (the server-only model aside)
with the server's views captured and writes message_energy.json and .md:
per setting and epoch, the mean over released records of
||clip(g)||^2 / C^2, estimated from the messages as sent (their energy minus
the noise's expected d (sigma C)^2), with the noise's standard error beside
it, the norm of the server's output averaged over each step's records (the
part of h they share), and what one release tells apart: the share of wrong x_p candidates
(with the sent label) that it makes at most 1/e as likely as the truth, the
share whose first-layer ReLU pattern differs from the truth's, the true
message's norm before clipping, and per unit of the head's first layer the
server's part of the pre-activation |h W_h + b| beside a wrong candidate's
swing |(p' - p) W_p|, with the part's factors ||h|| and ||W_h||_F (for
candidate spaces of at most 4,096;
splitjax/sweep.py: message_energy). Under them, the same epoch's messages
split by the sent label's class: each class's share of the records, the
share whose true message is longer than C, and the class's part of the mean
message, as sent and before the defence. Each batch's figures are kept in
energy_batches/ as it finishes, so a killed run, rerun with the same config
and workdir, trains only what is missing. A workdir that already holds a
result, or another config's, is refused.
"""

from splitjax import cli, sweep

if __name__ == "__main__":
  cli.run_app(sweep.message_energy)
