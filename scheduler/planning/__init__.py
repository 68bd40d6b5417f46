"""Pure planning: economics of the cost contract, the planner, and the backtest."""
