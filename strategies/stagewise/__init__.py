"""Stage-wise depth search (Jordao et al.): stage importance by PLS + VIP."""
