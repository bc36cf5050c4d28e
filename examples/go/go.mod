module temper.example/finetune

go 1.19
