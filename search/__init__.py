"""What the search loop builds on the algorithm: budgets, records of each generation, the random strategy's end."""
