"""Train, evaluate or few-shot-evaluate a config (tokenlearner_jax/main.py has the flags):

  python main.py --config=configs/quickstart.py --workdir=runs/quickstart
"""

from tokenlearner_jax import main

if __name__ == "__main__":
    main.run()
