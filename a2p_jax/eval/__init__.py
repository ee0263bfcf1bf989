"""Evaluation: metrics under the InterWild and IntagHand protocols."""
